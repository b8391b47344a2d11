"""docs/asyncapi.yaml: generated from the app, and true to what the tagger really writes."""

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, TypeAdapter
from redis import Redis

from schemas.control import ControlReply
from schemas.wire import DeadLetter, SessionEnd, SessionStart, TaggedMessage
from tagger.times import iso_ms
from tests.conftest import SettingsFactory, event, publish, run_burst, streams

DOCUMENT = Path(__file__).parent.parent / "docs" / "asyncapi.yaml"
REGENERATE = "faststream docs gen --yaml --factory tagger.asyncapi:app -o docs/asyncapi.yaml"


def test_document_is_what_the_app_generates(tmp_path: Path) -> None:
    generated = tmp_path / "asyncapi.yaml"
    faststream = Path(sys.executable).parent / "faststream"
    subprocess.run(
        [faststream, "docs", "gen", "--yaml", "--factory", "tagger.asyncapi:app", "-o", generated],
        check=True,
        capture_output=True,
        cwd=DOCUMENT.parent.parent,
    )
    # Parsed, not byte for byte: FastStream orders channels by hash, which varies between
    # processes; mappings compare without order.
    spec = yaml.safe_load(DOCUMENT.read_text())
    assert yaml.safe_load(generated.read_text()) == spec, (
        f"docs/asyncapi.yaml is out of date with the code; run `{REGENERATE}` and commit it"
    )
    operations = {name: op["action"] for name, op in spec["operations"].items()}
    assert operations == {
        "a3cp:messages": "receive",
        "a3cp:sessions:control": "receive",
        "a3cp:messages:tagged": "send",
        "a3cp:messages:dead": "send",
        "a3cp:sessions:control:replies": "send",
    }


def test_real_output_matches_the_documented_schemas(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=60)
    t0 = 1_750_000_000_000
    publish(
        client,
        settings,
        [
            event("ana01", t0),
            event("ana01", t0 + 120_000),  # a new session: timeout
            event("ana01", t0 + 1000),  # late: older than the latest session
            event("ben02", t0, session_id="sess_from_upstream"),
            b"{broken",
            orjson.dumps({**event(), "frame_data": "AAAA"}),  # media: hash and length only
        ],
    )
    start = {
        "action": "start",
        "record_id": str(uuid.uuid4()),
        "user_id": "cleo03",
        "timestamp": iso_ms(int(time.time() * 1000)),  # older than 5 min: expired
        "performer_id": "carer01",
        "is_training_data": True,
        "training_intent_label": "yes",
    }
    client.xadd(streams(settings).control_stream, {"data": orjson.dumps(start)})
    client.xadd(streams(settings).control_stream, {"data": b'{"action": "end"}'})  # refused
    run_burst(settings, sinks=False)

    kinds: dict[str, type[BaseModel]] = {
        "message": TaggedMessage,
        "session.start": SessionStart,
        "session.end": SessionEnd,
    }
    seen = set()
    for _id, fields in client.xrange(streams(settings).output_stream):
        kind = fields[b"kind"].decode()
        kinds[kind].model_validate_json(fields[b"data"])
        seen.add(kind)
    assert seen == set(kinds)
    dead = [_text(f) for _id, f in client.xrange(streams(settings).dead_letter_stream)]
    TypeAdapter(list[DeadLetter]).validate_python(dead)
    assert {d["reason"] for d in dead} == {"invalid_json", "raw_media"}
    replies = [_text(f) for _id, f in client.xrange(f"{streams(settings).control_stream}:replies")]
    TypeAdapter(list[ControlReply]).validate_python(replies)
    assert [r["status"] for r in replies] == ["ok", "error"], replies


def _text(fields: dict[bytes, bytes]) -> dict[str, Any]:
    return {k.decode(): v.decode() for k, v in fields.items()}
