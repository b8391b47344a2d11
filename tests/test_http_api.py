"""/api/v1 and login, driven over HTTP against `tagger serve` and a worker on a real
server; each write is checked in the output stream, the session's JSONL file and Parquet."""

import io
import os
import subprocess
import threading
import time
import zipfile
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from redis import Redis

from tests.conftest import SettingsFactory, event, output, publish, tagger_cmd, tagger_env, wait_for
from tests.http_service import ROLE_TOKENS, Served, serving


@pytest.fixture
def served(make_settings: SettingsFactory) -> Any:
    with serving(make_settings()) as s:
        yield s


def jsonl(served: Served, user: str, sid: str) -> list[dict[str, Any]]:
    path = served.settings.data_dir / "logs/users" / user / "sessions" / f"{sid}.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line)["event"] for line in path.read_bytes().splitlines()]


def parquet_kinds(served: Served, sid: str) -> list[str]:
    kinds = []
    for part in (served.settings.data_dir / "parquet" / "events").rglob("*.parquet"):
        table = pq.read_table(part, columns=["kind", "session_id"]).to_pylist()
        kinds += [row["kind"] for row in table if row["session_id"] == sid]
    return kinds


def test_start_note_end_and_bundle_reach_the_stream_the_file_and_parquet(
    served: Served, client: Redis
) -> None:
    with served.client("caregiver") as http:
        start = {"user_id": "noah05", "performer_id": "carer01", "is_training_data": True,
                 "training_intent_label": "help", "session_notes": "morning"}  # fmt: skip
        created = http.post("/api/v1/sessions", json=start)
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        assert created.json()["status"] == "active" and created.json()["opened_by"] == "carer01"
        assert http.post("/api/v1/sessions", json=start).status_code == 200  # the active one

        publish(client, served.settings, [event("noah05", int(time.time() * 1000))])
        wait_for(lambda: http.get(f"/api/v1/sessions/{sid}").json()["event_count"] == 1)

        first_note = {"note": "Smiled at the picture card", "performer_id": "carer01"}
        noted = http.post(f"/api/v1/sessions/{sid}/notes", json=first_note)
        assert noted.status_code == 201, noted.text
        note = noted.json()
        ended = http.post(f"/api/v1/sessions/{sid}/end", json={"performer_id": "carer02"})
        assert ended.status_code == 200 and ended.json()["status"] == "closed"
        assert ended.json()["closed_by"] == "carer02" and ended.json()["close_reason"] == "explicit"
        again = http.post(f"/api/v1/sessions/{sid}/end", json={"performer_id": "carer02"})
        assert again.status_code == 409
        # A note after the end: a record of its own, after the session.end.
        late = http.post(f"/api/v1/sessions/{sid}/notes",
                         json={"note": "Reviewed later", "performer_id": "carer03"})  # fmt: skip
        assert late.status_code == 201

        kinds = [e.get("kind", "message") for e in output(client, served.settings)]
        assert kinds == ["session.start", "message", "session.note", "session.end", "session.note"]
        in_stream = [e for e in output(client, served.settings) if e.get("kind") == "session.note"]
        assert in_stream[0]["record_id"] == note["record_id"]
        assert in_stream[0]["timestamp"] == note["timestamp"]
        assert (in_stream[0]["note"], in_stream[0]["performer_id"]) == (
            "Smiled at the picture card", "carer01",
        )  # fmt: skip

        wait_for(lambda: len(jsonl(served, "noah05", sid)) == 5)
        assert sorted(e.get("kind", "message") for e in jsonl(served, "noah05", sid)) == sorted(
            kinds
        )
        wait_for(lambda: sorted(parquet_kinds(served, sid)) == sorted(kinds), timeout_s=60)

        detail = http.get(f"/api/v1/sessions/{sid}").json()
        assert [n["note"] for n in detail["notes"]] == [
            "Smiled at the picture card",
            "Reviewed later",
        ]
        assert detail["is_training_data"] and detail["training_intent_label"] == "help"
        events = http.get(f"/api/v1/sessions/{sid}/events").json()
        assert events["total"] == 5
        assert [e.get("kind", "message") for e in events["items"]] == kinds
        assert (
            http.get(f"/api/v1/sessions/{sid}/events", params={"limit": 2, "offset": 4}).json()[
                "items"
            ][0]["note"]
            == "Reviewed later"
        )

        bundle = http.get(f"/api/v1/sessions/{sid}/bundle")
        assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(bundle.content)) as z:
            session = orjson.loads(z.read("session.json"))
            assert len(session["notes"]) == 2
            assert b"Reviewed later" in z.read("events.jsonl")
            assert b"Reviewed later" in z.read("timeline.html")


def test_list_filters_pages_and_counts(served: Served, client: Redis) -> None:
    now = int(time.time() * 1000)
    publish(client, served.settings, [event(u, now) for u in ("ana01", "ben02", "cem03")])
    with served.client("viewer") as http:
        wait_for(lambda: http.get("/api/v1/sessions").json()["total"] == 3)
        with served.client("caregiver") as writer:
            sid = http.get("/api/v1/sessions", params={"user_id": "ben02"}).json()["items"][0][
                "session_id"
            ]
            assert (
                writer.post(f"/api/v1/sessions/{sid}/end", json={"performer_id": "c"}).status_code
                == 200
            )
            train = {"user_id": "dan04", "performer_id": "c", "is_training_data": True,
                     "training_intent_label": "more"}  # fmt: skip
            assert writer.post("/api/v1/sessions", json=train).status_code == 201

        def total(**params: Any) -> int:
            answer = http.get("/api/v1/sessions", params=params)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert len(body["items"]) == min(body["total"], params.get("limit", 50))
            return int(body["total"])

        assert total() == 4
        assert total(status="active") == 3 and total(status="closed") == 1
        assert total(close_reason="explicit") == 1 and total(close_reason="timeout") == 0
        assert total(training=True) == 1 and total(training=False) == 3
        assert total(user_id="ana01") == 1
        assert total(since="2000-01-01T00:00:00Z") == 4 and total(until="2000-01-01T00:00:00Z") == 0
        assert total(limit=2) == 4
        page = http.get("/api/v1/sessions", params={"limit": 2, "offset": 2}).json()["items"]
        every = http.get("/api/v1/sessions").json()["items"]
        assert [s["session_id"] for s in page] == [s["session_id"] for s in every[2:4]]

        users = http.get("/api/v1/users").json()
        assert users["total"] == 4
        by_user = {u["user_id"]: u for u in users["items"]}
        assert by_user["ben02"]["active_session"] is None
        assert by_user["ana01"]["active_session"]["event_count"] == 1
        assert by_user["ana01"]["last_activity"] is not None


def test_roles_tokens_cookies_and_origins(served: Served) -> None:
    with served.client(None) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        for path in ("/api/v1/sessions", "/api/v1/users", "/openapi.json"):
            answer = anonymous.get(path)
            assert answer.status_code == 401 and "token" in answer.json()["detail"]
        wrong = anonymous.get(
            "/api/v1/sessions", headers={"Authorization": "Bearer nope-nope-nope"}
        )
        assert wrong.status_code == 401
    start = {"user_id": "eve05", "performer_id": "c"}
    with served.client("viewer") as viewer:
        assert viewer.get("/api/v1/sessions").status_code == 200
        assert viewer.post("/api/v1/sessions", json=start).status_code == 403
    with served.client("service") as service:
        assert service.get("/api/v1/sessions").status_code == 403
    with served.client("caregiver") as caregiver:
        assert caregiver.delete("/api/v1/users/eve05").status_code == 403
        foreign = caregiver.post(
            "/api/v1/sessions", json=start, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        own = caregiver.post("/api/v1/sessions", json=start, headers={"Origin": served.base})
        assert own.status_code == 201

    # People: a token in, a cookie out; the cookie is not the token and is HttpOnly, Strict.
    with httpx.Client(base_url=served.base, timeout=20) as browser:
        refused = browser.post("/login", data={"token": "wrong-token-wrong"})
        assert refused.status_code == 401 and "tagger_session" not in browser.cookies
        login = browser.post("/login", data={"token": ROLE_TOKENS["viewer"], "next": "/x"})
        assert login.status_code == 303 and login.headers["location"] == "/x"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert ROLE_TOKENS["viewer"] not in cookie
        assert browser.get("/api/v1/sessions").status_code == 200
        assert browser.post("/api/v1/sessions", json=start).status_code == 403  # a viewer
        # The printed login URL: taken once, answered with a URL that no longer holds it.
        link = browser.get(
            "/login", params={"token": ROLE_TOKENS["viewer"], "next": "//evil.example"}
        )
        assert link.status_code == 303 and link.headers["location"] == "/"
    for name in ("content-security-policy", "x-content-type-options", "x-frame-options"):
        assert name in login.headers


def test_bad_input_gets_a_4xx_with_a_reason(served: Served) -> None:
    with served.client("admin") as http:
        for method, path, body in (
            ("GET", "/api/v1/sessions/sess_0000000000000000", None),
            ("GET", "/api/v1/sessions/..%2F..%2Fetc%2Fpasswd", None),
            ("GET", "/api/v1/sessions/sess_0000000000000000/events", None),
            ("GET", "/api/v1/sessions", {"status": "sleeping"}),
            ("GET", "/api/v1/sessions", {"limit": 0}),
            ("GET", "/api/v1/sessions", {"since": "yesterday"}),
            ("POST", "/api/v1/sessions", {"user_id": "../x", "performer_id": "c"}),
            ("POST", "/api/v1/sessions", {"user_id": "ok01"}),
            ("POST", "/api/v1/sessions/sess_0000000000000000/end", {"performer_id": "c"}),
            (
                "POST",
                "/api/v1/sessions/sess_0000000000000000/notes",
                {"note": "x", "performer_id": "c"},
            ),
            ("DELETE", "/api/v1/users/..", None),
        ):
            if method == "GET":
                answer = http.get(path, params=body)
            elif method == "DELETE":
                answer = http.delete(path)
            else:
                answer = http.post(path, json=body)
            assert 400 <= answer.status_code < 500, (method, path, answer.status_code, answer.text)
            assert answer.json()["detail"], (method, path)
        sid = http.post("/api/v1/sessions", json={"user_id": "fay06", "performer_id": "c"}).json()[
            "session_id"
        ]
        huge = http.post(
            f"/api/v1/sessions/{sid}/notes", json={"note": "x" * 70_000, "performer_id": "c"}
        )
        assert huge.status_code == 413
        long = http.post(
            f"/api/v1/sessions/{sid}/notes", json={"note": "x" * 9000, "performer_id": "c"}
        )
        assert long.status_code == 422
        blank = http.post(f"/api/v1/sessions/{sid}/notes", json={"note": "", "performer_id": "c"})
        assert blank.status_code == 422


def test_live_follows_an_active_session(served: Served, client: Redis) -> None:
    with served.client("caregiver") as http:
        sid = http.post("/api/v1/sessions", json={"user_id": "gus07", "performer_id": "c"}).json()[
            "session_id"
        ]
        seen: list[str] = []

        def follow() -> None:
            with http.stream("GET", f"/api/v1/sessions/{sid}/live") as stream:
                for line in stream.iter_lines():
                    seen.append(line)
                    if line.startswith("data:") and "gesture" in line:
                        return

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        wait_for(lambda: seen)  # the stream is open: its first comment came
        publish(client, served.settings, [event("ben02", int(time.time() * 1000))])  # not ours
        publish(client, served.settings, [event("gus07", int(time.time() * 1000))])
        reader.join(timeout=20)
        assert not reader.is_alive()
    events = [line for line in seen if line.startswith("event:")]
    assert events == ["event: message"]
    assert sid in next(line for line in seen if line.startswith("data:"))


def test_an_admin_erases_a_user(served: Served, client: Redis) -> None:
    publish(client, served.settings, [event("hal08", int(time.time() * 1000))])
    with served.client("admin") as http:
        wait_for(lambda: http.get("/api/v1/sessions", params={"user_id": "hal08"}).json()["total"])
        report = http.delete("/api/v1/users/hal08")
        assert report.status_code == 200, report.text
        assert report.json()["output_entries"] >= 2
        assert http.get("/api/v1/sessions", params={"user_id": "hal08"}).json()["total"] == 0
        assert "hal08" not in {u["user_id"] for u in http.get("/api/v1/users").json()["items"]}


def test_serve_makes_a_private_token_on_loopback_and_refuses_other_addresses_without_one(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    with serving(settings, worker=False, TAGGER_HTTP_TOKENS_FILE="") as served:
        token_file = settings.data_dir / "http-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        token = token_file.read_text().strip()
        with httpx.Client(
            base_url=served.base, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            assert http.get("/api/v1/sessions").status_code == 200
    env = tagger_env(settings) | {"TAGGER_HTTP_HOST": "0.0.0.0", "TAGGER_HTTP_PORT": "0"}
    refused = subprocess.run(tagger_cmd("serve"), env=env, capture_output=True, timeout=60)
    assert refused.returncode != 0
    assert b"TAGGER_HTTP_TOKEN" in refused.stderr and b"beyond loopback" in refused.stderr
    assert os.environ.get("TAGGER_HTTP_TOKEN") is None


def test_live_pages_of_two_sessions_each_get_their_own_records(
    served: Served, client: Redis
) -> None:
    with served.client("viewer") as http, served.client("caregiver") as writer:
        sids = {
            u: writer.post("/api/v1/sessions", json={"user_id": u, "performer_id": "c"}).json()[
                "session_id"
            ]
            for u in ("ivy09", "jon10")
        }
        seen: dict[str, list[str]] = {u: [] for u in sids}

        def follow(user: str) -> None:
            with http.stream("GET", f"/api/v1/sessions/{sids[user]}/live") as stream:
                for line in stream.iter_lines():
                    seen[user].append(line)
                    if line.startswith("data:"):
                        return

        readers = [threading.Thread(target=follow, args=(u,), daemon=True) for u in sids]
        for reader in readers:
            reader.start()
        wait_for(lambda: all(seen.values()))  # both open (one shared reader behind them)
        publish(client, served.settings, [event(u, int(time.time() * 1000)) for u in sids])
        for reader in readers:
            reader.join(timeout=20)
            assert not reader.is_alive()
    for user, lines in seen.items():
        (data,) = [line for line in lines if line.startswith("data:")]
        assert orjson.loads(data.removeprefix("data:"))["session_id"] == sids[user]
