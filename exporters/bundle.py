"""Caregiver bundles: one session as a checked zip (metadata, events, Parquet, timeline)."""

import hashlib
import io
import os
import re
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from exporters.parquet import event_schema, row_of
from exporters.paths import inside, make_dirs
from exporters.records import record_time, top_label
from exporters.timeline import timeline_html
from schemas import SESSION_ID_PATTERN
from tagger.errors import TaggerError
from tagger.times import parse_time

BUNDLE_FORMAT = "a3cp-session-bundle/1"
BUNDLE_FILES = ("session.json", "events.jsonl", "events.parquet", "timeline.html")
# Fields the tagger added; a replay publishes the events as they were first sent.
TAGGER_FIELDS = ("session_id", "session_seq", "late", "upstream_session_id")


class BundleError(TaggerError):
    """A session that cannot be exported, or a bundle that does not check out."""


def session_log(data_dir: Path, session_id: str) -> Path:
    """The JSONL log of a session, wherever its user is."""
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise BundleError(f"{session_id!r} is not a session id (sess_ + 16 hex)")
    found = list(inside(data_dir, Path("logs", "users")).glob(f"*/sessions/{session_id}.jsonl"))
    if len(found) != 1:
        raise BundleError(
            f"no log for {session_id} under {data_dir}/logs; check TAGGER_DATA_DIR, and that "
            "`tagger run` (with its sinks) has written it"
        )
    return found[0]


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a log (complete lines only), in chronological order."""
    events = []
    for line in path.read_bytes().splitlines(keepends=True):
        if not line.endswith(b"\n"):
            continue  # a line still being written
        try:
            events.append(orjson.loads(line)["event"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a dead co-writer's fragment, kept by the sink (exporters/jsonl.py)
    notes = sorted((e for e in events if e.get("kind") == "session.note"), key=_time_of)
    ordered = sorted((e for e in events if e.get("kind") != "session.note"), key=_chronological)
    # A note goes where it was taken: among the events, or after the end of a closed session.
    for note in notes:
        at = next(
            (n for n, e in enumerate(ordered) if n > 0 and _time_of(e) > _time_of(note)),
            len(ordered),
        )
        ordered.insert(at, note)
    return ordered


def _chronological(event: dict[str, Any]) -> tuple[int, datetime]:
    rank = {"session.start": 0, "session.end": 2}.get(event.get("kind", "message"), 1)
    # Boundaries sort by their own times, so a late event stays inside its session.
    return (rank, _time_of(event))


def _time_of(event: dict[str, Any]) -> datetime:
    return record_time(event) or datetime.min.replace(tzinfo=UTC)


def summarize(session_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """session.json: who, when, how it ended, and what happened in it."""
    messages = [e for e in events if e.get("kind", "message") == "message"]
    start = next((e for e in events if e.get("kind") == "session.start"), {})
    end = next((e for e in events if e.get("kind") == "session.end"), {})
    times = [t for m in messages if (t := parse_time(m.get("timestamp")))]
    first = parse_time(start.get("start_time")) or min(times, default=None)
    last = parse_time(end.get("end_time")) or max(times, default=None)
    labels: Counter[str] = Counter()
    for m in messages:
        if label := top_label(m.get("classifier_output")):
            labels[label] += 1
    return {
        "session_id": session_id,
        "user_id": (messages or [start or end or {}])[0].get("user_id"),
        "status": "closed" if end else "open",
        "start_time": start.get("start_time"),
        "end_time": end.get("end_time"),
        "close_reason": end.get("close_reason"),
        "opened_by": start.get("performer_id"),
        "closed_by": end.get("performer_id"),
        "session_notes": start.get("session_notes"),
        "is_training_data": start.get("is_training_data", False),
        "training_intent_label": start.get("training_intent_label"),
        "notes": [
            {k: e.get(k) for k in ("record_id", "session_id", "timestamp", "performer_id", "note")}
            for e in events
            if e.get("kind") == "session.note"
        ],
        "summary": {
            "duration_s": (last - first).total_seconds() if first and last else None,
            "event_count": len(messages),
            "late_events": sum(1 for m in messages if m.get("late")),
            "by_modality": _count(messages, "modality"),
            "by_source": _count(messages, "source"),
            "by_performer": _count(messages, "performer_id"),
            "top_labels": dict(labels.most_common(5)),
        },
    }


def export_bundle(data_dir: Path, session_id: str, out: Path) -> dict[str, Any]:
    """Write the bundle zip for one session (atomically); returns its manifest."""
    events = read_events(session_log(data_dir, session_id))
    session = summarize(session_id, events)
    files = {
        "session.json": orjson.dumps(session, option=orjson.OPT_INDENT_2),
        "events.jsonl": b"".join(orjson.dumps(e) + b"\n" for e in events),
        "events.parquet": _parquet_bytes(events),
        "timeline.html": timeline_html(session, events).encode(),
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "session_id": session_id,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in files.items()
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        for name, data in files.items():
            bundle.writestr(name, data)
    os.replace(temp, out)
    return manifest


def import_bundle(data_dir: Path, bundle_path: Path) -> dict[str, Any]:
    """Check a bundle against its manifest and unpack it to <data dir>/imports/<sid>/."""
    try:
        with zipfile.ZipFile(bundle_path) as bundle:
            manifest = orjson.loads(bundle.read("manifest.json"))
            contents = {name: bundle.read(name) for name in BUNDLE_FILES}
    except (zipfile.BadZipFile, KeyError, orjson.JSONDecodeError, OSError) as exc:
        raise BundleError(f"{bundle_path} is not a readable session bundle ({exc})") from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{bundle_path}: unknown bundle format {manifest.get('format')!r}")
    for name, data in contents.items():
        expected = manifest["files"].get(name, {}).get("sha256")
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(
                f"{bundle_path}: {name} does not match its checksum; the bundle was changed "
                "or damaged, ask for a new export"
            )
    session_id = str(manifest["session_id"])
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise BundleError(f"{bundle_path}: manifest names no valid session id")
    target = inside(data_dir, Path("imports", session_id, "manifest.json"))
    make_dirs(target)
    for name, data in {"manifest.json": orjson.dumps(manifest), **contents}.items():
        (target.parent / name).write_bytes(data)
    return dict(manifest)


def imported_events(data_dir: Path, session_id: str) -> list[dict[str, Any]]:
    """The messages of an imported bundle, in order, as they were first published."""
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise BundleError(f"{session_id!r} is not a session id")
    path = inside(data_dir, Path("imports", session_id, "events.jsonl"))
    if not path.exists():
        raise BundleError(f"{session_id} was not imported; run `tagger import BUNDLE.zip` first")
    events = []
    for line in path.read_bytes().splitlines():
        event = orjson.loads(line)
        if event.get("kind", "message") != "message":
            continue
        upstream = event.get("upstream_session_id")
        for name in TAGGER_FIELDS:
            event.pop(name, None)
        if upstream:
            event["session_id"] = upstream
        events.append(event)
    return events


def _parquet_bytes(events: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [row_of(str(n), e.get("kind", "message"), e) for n, e in enumerate(events)]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=event_schema()), sink)
    return sink.getvalue()


def _count(events: list[dict[str, Any]], field: str) -> dict[str, int]:
    return dict(Counter(str(e.get(field)) for e in events if e.get(field) is not None))
