"""`tagger serve`'s OpenAPI document, fuzzed with schemathesis against the live server (and
a worker beside it, on a real server): for every operation, whatever the fuzzer sends
with an admin token, no answer is a 5xx, and each answer's status code, content type and
body are the ones the document gives.

Half the generated cases have their ids swapped for those of real sessions and users
(seeded first), so the fuzzer reaches the answers of found sessions too, not only 404s."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tagger.connect import sync_client
from tagger.http.app import create_app
from tagger.settings import Settings
from tests.conftest import event, publish, wait_for
from tests.http_service import ROLE_TOKENS, Served, serving

ADMIN = {"Authorization": f"Bearer {ROLE_TOKENS['admin']}"}
USERS = ["fuzz01", "fuzz02", "fuzz03"]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def document() -> dict[str, Any]:
    """The app's OpenAPI document as `tagger serve` builds it (`live` checks that the
    server answers GET /openapi.json with this very document)."""
    return create_app(None).openapi()  # type: ignore[arg-type]  # not served: no services


# Loaded at collection, from the app itself: schemathesis' lazy loader
# (`schemathesis.pytest.from_fixture`, which would load it from the live server) sets
# `Function._nodeid`, which pytest 9.2 no longer has (AttributeError).
schema = (
    schemathesis.openapi.from_dict(document())
    # Erasing a user deletes their data by design: fuzzing it would only race the seeded
    # sessions away (tests/test_http_api.py tests it).
    .exclude(method="DELETE", path="/api/v1/users/{user_id}")
    # The server-sent events of a found session never end: the fuzzer would wait forever.
    .exclude(path="/api/v1/sessions/{session_id}/live")
)


@dataclass
class Live:
    """The served app and the ids of what was seeded in it."""

    served: Served
    sessions: list[str]


@pytest.fixture(scope="module")
def live(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One `tagger serve` and worker for the module: an active session per user (started
    by an event), one of them noted and ended (so it has a file, for /events and /bundle),
    and a new one for that user."""
    ns = f"test:{uuid.uuid4().hex[:12]}"
    settings = Settings(
        redis_url=server_url, data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        input_stream=f"{ns}:in", output_stream=f"{ns}:out", dead_letter_stream=f"{ns}:dead",
        control_stream=f"{ns}:control", state_prefix=f"{ns}:state", claim_idle_ms=200,
        metrics_port=0, trim_interval_s=3600,
    )  # fmt: skip
    client = sync_client(server_url)
    with serving(settings) as served, served.client("admin") as http:
        assert http.get("/openapi.json").json() == document()
        now = 1_750_000_000_000
        publish(client, settings, [event(u, now + n) for n, u in enumerate(USERS)])
        wait_for(lambda: http.get("/api/v1/sessions").json()["total"] == len(USERS))
        sessions = [s["session_id"] for s in http.get("/api/v1/sessions").json()["items"]]
        closed = sessions[0]
        note = {"note": "seeded", "performer_id": "fuzz"}
        assert http.post(f"/api/v1/sessions/{closed}/notes", json=note).status_code == 201
        ended = http.post(f"/api/v1/sessions/{closed}/end", json={"performer_id": "fuzz"})
        assert ended.status_code == 200, ended.text
        user = ended.json()["user_id"]
        started = http.post("/api/v1/sessions", json={"user_id": user, "performer_id": "fuzz"})
        assert started.status_code == 201, started.text
        sessions.append(started.json()["session_id"])
        wait_for(lambda: http.get(f"/api/v1/sessions/{closed}/bundle").status_code == 200)
        yield Live(served, sessions)
    client.close()


def with_real_ids(case: Any, data: st.DataObject, live: Live) -> None:
    """Half the time, the case's session and user ids replaced by seeded ones."""
    if not data.draw(st.booleans(), label="real ids"):
        return
    if "session_id" in (case.path_parameters or {}):
        case.path_parameters["session_id"] = data.draw(st.sampled_from(live.sessions))
    if isinstance(case.body, dict):
        if "session_id" in case.body:
            case.body["session_id"] = data.draw(st.sampled_from(live.sessions))
        if "user_id" in case.body:
            case.body["user_id"] = data.draw(st.sampled_from(USERS))
    if case.query and "user_id" in case.query:
        case.query["user_id"] = data.draw(st.sampled_from(USERS))


@schema.parametrize()
@schema.given(data=st.data())
@FUZZ
def test_no_answer_is_a_server_error_or_off_its_schema(
    case: Any, data: st.DataObject, live: Live
) -> None:
    with_real_ids(case, data, live)
    checks = [not_a_server_error, content_type_conformance, response_schema_conformance]
    case.call_and_validate(live.served.base, headers=ADMIN, timeout=30, checks=checks)


@schema.parametrize()
@schema.given(data=st.data())
@FUZZ
def test_every_status_code_is_documented(case: Any, data: st.DataObject, live: Live) -> None:
    with_real_ids(case, data, live)
    checks = [status_code_conformance]
    case.call_and_validate(live.served.base, headers=ADMIN, timeout=30, checks=checks)


# What the fuzzer found, kept as plain requests (each failed before its fix, or still does).


def test_a_query_time_without_an_offset_is_utc(live: Live) -> None:
    # Was a 500 (TypeError: naive minus aware datetime in epoch_ms).
    with live.served.client("admin") as http:
        for since in ("2025-06-15T15:06:40", "2025-06-15"):
            page = http.get("/api/v1/sessions", params={"since": since, "until": since})
            assert page.status_code == 200, page.text
        aware = http.get("/api/v1/sessions", params={"since": "2025-06-15T00:00:00Z"}).json()
        naive = http.get("/api/v1/sessions", params={"since": "2025-06-15T00:00:00"}).json()
        assert naive == aware


def test_what_the_owner_would_refuse_is_a_422_with_the_reason(live: Live) -> None:
    # Were 400 "refused: invalid_request: ..." (undocumented), from the owner's reply.
    with live.served.client("admin") as http:
        training = {"user_id": "fuzz09", "performer_id": "fuzz", "is_training_data": True}
        refused = http.post("/api/v1/sessions", json=training)
        assert refused.status_code == 422, refused.text
        assert "training_intent_label" in refused.text
        blank = {"note": " \t\x1c", "performer_id": "fuzz"}  # \x1c: blank to str.strip
        refused = http.post(f"/api/v1/sessions/{live.sessions[0]}/notes", json=blank)
        assert refused.status_code == 422, refused.text


def upstream_start(**fields: Any) -> dict[str, Any]:
    return {
        "schema_version": "1.0.0", "record_id": str(uuid.uuid4()), "user_id": "fuzz08",
        "timestamp": "2025-06-15T15:06:40Z", "performer_id": "fuzz",
    } | fields  # fmt: skip


def test_a_time_out_of_range_in_utc_is_a_422_not_a_500(live: Live) -> None:
    with live.served.client("admin") as http:
        early = upstream_start(timestamp="0001-01-01T00:00:00+03:07")
        answer = http.post("/session_manager/sessions.start", json=early)
        assert answer.status_code == 422, answer.text
        late = upstream_start(session_id=live.sessions[0], end_time="9999-12-31T23:59:59-01:00")
        answer = http.post("/session_manager/sessions.end", json=late)
        assert answer.status_code == 422, answer.text


def test_an_upstream_training_start_without_a_label_is_a_422(live: Live) -> None:
    with live.served.client("admin") as http:
        answer = http.post(
            "/session_manager/sessions.start", json=upstream_start(is_training_data=True)
        )
        assert answer.status_code == 422, answer.text
