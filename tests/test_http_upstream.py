"""Upstream A3CP's session_manager contract, driven over HTTP against `tagger serve` and a
worker on a real server, with upstream's published examples (tests/fixtures/upstream)."""

import copy
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from tests.conftest import SettingsFactory, output, wait_for
from tests.http_service import Served, serving

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
SESSION_ID = re.compile(r"^sess_[0-9a-f]{16}$")
MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def start_input(user_id: str = "elias01") -> dict[str, Any]:
    body = fixture("session_manager_start.input.json")
    return body | {"user_id": user_id, "record_id": str(uuid.uuid4())}


def end_input(user_id: str, session_id: str, performer: str | None = "carer01") -> dict[str, Any]:
    body = fixture("session_manager_end.input.json") | {
        "user_id": user_id,
        "session_id": session_id,
    }
    return body | ({"performer_id": performer} if performer is not None else {})


@pytest.fixture
def served(make_settings: SettingsFactory) -> Any:
    with serving(make_settings()) as s:
        yield s


def kinds(client: Redis, served: Served, session_id: str) -> list[str]:
    return [e.get("kind", "message") for e in output(client, served.settings)
            if e["session_id"] == session_id]  # fmt: skip


def test_start_answers_as_upstreams_example_and_is_idempotent(
    served: Served, client: Redis
) -> None:
    example = fixture("session_manager_start.output.json")
    with served.client("service") as http:
        first = http.post("/session_manager/sessions.start", json=start_input())
        assert first.status_code == 200, first.text
        body = first.json()
        assert set(example) <= set(body)
        assert SESSION_ID.match(body["session_id"]) and MS_Z.match(body["timestamp"])
        assert body["source"] == "session_manager" and body["modality"] is None
        assert uuid.UUID(body["record_id"]).version == 4
        for name in ("user_id", "performer_id", "is_training_data", "session_notes",
                     "training_intent_label", "schema_version"):  # fmt: skip
            assert body[name] == example[name], name
        # A second start: the active session, with its own start fields, a new record_id.
        again = http.post(
            "/session_manager/sessions.start",
            json=start_input() | {"performer_id": "someone_else", "session_notes": "x"},
        ).json()
    assert again["session_id"] == body["session_id"]
    assert again["start_time"] == body["start_time"]
    assert (again["performer_id"], again["session_notes"]) == ("carer01", example["session_notes"])
    assert again["record_id"] != body["record_id"]
    # The same session as the stream's: one session.start in the output, and in its file.
    assert kinds(client, served, body["session_id"]) == ["session.start"]
    log = served.settings.data_dir / "logs/users/elias01/sessions" / f"{body['session_id']}.jsonl"
    wait_for(lambda: log.exists() and b"session.start" in log.read_bytes())


def test_end_refuses_unknown_foreign_and_closed_sessions_and_changes_nothing(
    served: Served, client: Redis
) -> None:
    with served.client("service") as http:
        sid = http.post("/session_manager/sessions.start", json=start_input("elias01")).json()[
            "session_id"
        ]
        other = http.post("/session_manager/sessions.start", json=start_input("mira02")).json()[
            "session_id"
        ]
        end = "/session_manager/sessions.end"
        # Upstream's own published end example carries no performer_id: upstream says 400.
        published = fixture("session_manager_end.input.json") | {"session_id": sid}
        assert http.post(end, json=published).status_code == 400
        assert http.post(end, json=end_input("elias01", "sess_0000000000000000")).status_code == 404
        assert http.post(end, json=end_input("elias01", "not-a-session")).status_code == 404
        assert http.post(end, json=end_input("elias01", other)).status_code == 403
        assert kinds(client, served, sid) == ["session.start"]
        assert kinds(client, served, other) == ["session.start"]  # no other session closed

        ended = http.post(end, json=end_input("elias01", sid))
        assert ended.status_code == 200, ended.text
        body = ended.json()
        example = fixture("session_manager_end.output.json")
        assert set(example) <= set(body)
        assert (body["session_id"], body["source"], body["end_time"]) == (
            sid, "session_manager", example["end_time"],
        )  # fmt: skip
        assert MS_Z.match(body["timestamp"])
        again = http.post(end, json=end_input("elias01", sid))
        assert again.status_code == 409 and "already closed" in again.json()["detail"]
    assert kinds(client, served, sid) == ["session.start", "session.end"]
    assert kinds(client, served, other) == ["session.start"]
    end_record = next(e for e in output(client, served.settings) if e.get("kind") == "session.end")
    assert (end_record["close_reason"], end_record["performer_id"]) == ("explicit", "carer01")


def test_validate_answers_every_published_case(served: Served) -> None:
    cases = fixture("session_manager_validate.cases.json")
    with served.client("service") as http:
        sessions: dict[tuple[str, str], str] = {}

        def session_for(given: dict[str, Any]) -> str:
            key = (given["owner"], given["session"])
            if key not in sessions:
                body = start_input(given["owner"])
                sid = http.post("/session_manager/sessions.start", json=body).json()["session_id"]
                if given["session"] == "closed":
                    ended = http.post(
                        "/session_manager/sessions.end", json=end_input(given["owner"], sid)
                    )
                    assert ended.status_code == 200
                sessions[key] = sid
            return sessions[key]

        # Closed ones first: a start while the user has an active session answers that one.
        for case in sorted(cases, key=lambda c: c["given"].get("session") != "closed"):
            if case["given"].get("session"):
                session_for(case["given"])
        for case in cases:
            request = copy.deepcopy(case["request"])
            if case["given"].get("session"):
                sid = session_for(case["given"])
                for name, value in request.items():
                    if isinstance(value, str) and "<session_id>" in value:
                        request[name] = value.replace("<session_id>", sid)
            answer = http.post("/session_manager/sessions.validate", json=request)
            assert answer.status_code == case["expected_http_status"], case["name"]
            if case["expected_status"] is not None:
                assert answer.json() == {"status": case["expected_status"]}, case["name"]


def test_malformed_bodies_get_a_reason(served: Served) -> None:
    with served.client("service") as http:
        for route in ("sessions.start", "sessions.end", "sessions.validate"):
            path = f"/session_manager/{route}"
            for body in (b"{", b"[1]", b"{}", b'{"user_id": 42}'):
                answer = http.post(path, content=body, headers={"content-type": "application/json"})
                assert answer.status_code in (400, 422), (route, body)
                assert answer.json()["detail"], (route, body)
        traversal = start_input() | {"user_id": "../../etc"}
        assert http.post("/session_manager/sessions.start", json=traversal).status_code == 422
        big = start_input() | {"session_notes": "x" * 70_000}
        assert http.post("/session_manager/sessions.start", json=big).status_code == 413


def test_the_upstream_routes_need_the_service_role_unless_opened_to_loopback(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    with serving(settings) as served:
        with served.client(None) as http:
            assert (
                http.post("/session_manager/sessions.start", json=start_input()).status_code == 401
            )
        with served.client("viewer") as http:
            assert (
                http.post("/session_manager/sessions.start", json=start_input()).status_code == 403
            )
    opened = serving(settings, TAGGER_HTTP_UPSTREAM_OPEN_ON_LOOPBACK="true")
    with opened as served, served.client(None) as http:
        assert http.post("/session_manager/sessions.start", json=start_input()).status_code == 200
        assert http.get("/api/v1/sessions").status_code == 401  # only those three
