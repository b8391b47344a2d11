"""Turns one raw input entry into an event ready to tag, or a dead letter with a reason."""

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
from faststream.redis.parser.binary import BinaryMessageFormatV1
from pydantic import ValidationError

from tagger.intake_spine import spine_of
from tagger.intake_upstream import FIX as _FIX
from tagger.intake_upstream import upstream_problem
from tagger.times import iso_ms

MAX_ENTRY_BYTES = 512 * 1024  # A3CP: a log line may be at most 512 KiB
# Cheap byte probes (on the lower-cased bytes: URL schemes ignore case); only an entry
# that contains one is walked in full. A backslash may hide a marker behind a JSON
# escape, so it triggers the walk too. (One `in` per probe is ~10x faster than a regex;
# the probes are spelled out rather than looped over: a generator costs more than they do.)
# Media sent without a marker: a string holding a run this long of base64 characters
# (about 1.5 KiB of binary). Only entries longer than the run are walked for it.
BASE64_RUN = 2048
_BASE64_RUN = re.compile(rf"[A-Za-z0-9+/]{{{BASE64_RUN},}}")
_MEDIA_URL_PREFIXES = ("data:image/", "data:audio/", "data:video/")
# Nesting beyond this is refused: no A3CP event needs it, and every reader downstream
# (JSONL tools, Parquet's `extra` JSON, browsers) would have to cope with it.
MAX_DEPTH = 32
_BINARY_AUDIO_FORMATS = {"base64", "bytes"}
_REASON_BY_FIELD = {
    "schema_version": "bad_schema_version",
    "record_id": "bad_record_id",
    "user_id": "bad_user_id",
    "timestamp": "bad_timestamp",
    "modality": "bad_modality",
    "classifier_output": "bad_classifier_output",
    "session_id": "bad_session_id",
}
# TAGGER_MAX_CLOCK_SKEW_S's default: how far (s) an event's timestamp may be ahead of the
# server's clock at its arrival. The arrival time is the entry's stream id (`<ms>-<seq>`,
# made by the server's clock on XADD with `*`), so the check is pure and a replay of the
# same entries decides the same way.
DEFAULT_MAX_CLOCK_SKEW_S = 300
# An id below this (2020-01-01) was not made by a server's clock but given by hand (tests,
# hand-made imports): it says nothing about the time of arrival, so no clock check.
_ARRIVAL_FLOOR_MS = 1_577_836_800_000


@dataclass(slots=True)
class Accepted:
    entry_id: bytes
    user_id: str
    record_id: str
    ts_ms: int
    head: bytes  # the event's JSON minus its closing brace and any session_id
    upstream_session_id: str  # session_id the publisher sent, "" when none
    modality: str  # "" when absent
    source: str  # "" when absent


@dataclass(slots=True)
class Rejected:
    entry_id: bytes
    reason: str
    detail: str
    data: bytes | None  # None where keeping the bytes is not allowed (media, oversized)
    data_sha256: str = ""
    data_len: int = 0

    def stream_fields(self) -> list[bytes | str]:
        """Field/value pairs of the dead-letter entry, flattened."""
        fields: list[bytes | str] = ["reason", self.reason, "detail", self.detail]
        fields += ["source_id", self.entry_id]
        if self.data is not None:
            fields += ["data", self.data]
        else:
            fields += ["data_sha256", self.data_sha256, "data_len", str(self.data_len)]
        return fields


def payload_of(fields: dict[bytes, bytes]) -> bytes | None:
    """The message bytes of an entry: field `data`, or a FastStream publisher's `__data__`."""
    raw = fields.get(b"data")
    if raw is None and (wrapped := fields.get(b"__data__")) is not None:
        raw, _headers = BinaryMessageFormatV1.parse(wrapped)
    return raw


def check_entry(
    entry_id: bytes,
    fields: dict[bytes, bytes],
    *,
    max_clock_skew_s: int = DEFAULT_MAX_CLOCK_SKEW_S,
) -> Accepted | Rejected:
    """Validate an entry by the A3CP rules; never raises for bad input. An event stamped
    more than `max_clock_skew_s` ahead of its entry's arrival (the stream id) is refused."""
    raw = payload_of(fields)
    if raw is None:
        names = ", ".join(sorted(k.decode(errors="replace") for k in fields))
        return Rejected(
            entry_id, "no_data", f"Entry has no 'data' field (fields: {names}). {_FIX}", None
        )
    if len(raw) > MAX_ENTRY_BYTES:
        return without_bytes(
            entry_id,
            raw,
            "oversized",
            f"Entry is {len(raw)} bytes, over the {MAX_ENTRY_BYTES}-byte limit; store large "
            "payloads elsewhere and reference them (raw_features_ref).",
        )
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected(entry_id, "invalid_json", f"Not valid JSON ({exc}). {_FIX}", raw)
    if not isinstance(event, dict):
        return Rejected(entry_id, "not_object", f"JSON is not an object. {_FIX}", raw)
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and depth(event) > MAX_DEPTH:
        return Rejected(
            entry_id, "too_deep", f"JSON is nested deeper than {MAX_DEPTH} levels. {_FIX}", raw
        )
    canonical = orjson.dumps(event)
    if canonical != raw and (key := duplicate_key(raw)) is not None:
        return Rejected(
            entry_id,
            "duplicate_key",
            f"Key '{key[:64]}' appears twice in one object; readers would disagree on its "
            f"value. {_FIX}",
            raw,
        )
    if _media_probed(raw) and (media := find_raw_media(event)):
        return without_bytes(
            entry_id,
            raw,
            "raw_media",
            f"Event carries raw media ({media}), which must never reach the logs; "
            "publish features or a raw_features_ref instead.",
        )
    if (b"context_" in raw or b"\\" in raw) and (
        flat := sorted(k for k in event if k.startswith("context_"))
    ):
        return Rejected(
            entry_id,
            "flat_context",
            f"Flat context keys are prohibited ({', '.join(flat)}); nest them under "
            f"'context'. {_FIX}",
            raw,
        )
    try:
        user_id, record_id, ts_ms, modality, source = spine_of(event)
    except ValidationError as exc:
        return _invalid(entry_id, raw, exc)
    if ("capture_id" in event or "annotation" in event or "raw_features_ref" in event) and (
        problem := upstream_problem(event)
    ) is not None:
        return Rejected(entry_id, *problem, raw)
    try:  # the server's clock at arrival: the milliseconds of the id `<ms>-<seq>`
        arrived_ms = int(entry_id.partition(b"-")[0])
    except (TypeError, ValueError):
        arrived_ms = 0
    if ts_ms - arrived_ms > max_clock_skew_s * 1000 and arrived_ms >= _ARRIVAL_FLOOR_MS:
        return _clock_ahead(entry_id, raw, source, ts_ms, arrived_ms, max_clock_skew_s)

    upstream = event.pop("session_id", None)
    if upstream is None:
        head = raw.rstrip()[:-1]  # keep the publisher's bytes exactly
    else:
        head = orjson.dumps(event)[:-1]
    return Accepted(entry_id, user_id, record_id, ts_ms, head, upstream or "", modality, source)


def _clock_ahead(
    entry_id: bytes, raw: bytes, source: str, ts_ms: int, arrived_ms: int, skew_s: int
) -> Rejected:
    device = f"the device behind source {source!r}" if source else "the device"
    detail = (
        f"timestamp {iso_ms(ts_ms)} is {(ts_ms - arrived_ms) / 1000:.0f} s ahead of the "
        f"server's clock at arrival ({iso_ms(arrived_ms)}), more than "
        f"TAGGER_MAX_CLOCK_SKEW_S ({skew_s} s): the clock of {device} that stamped it is "
        "wrong. Set that clock right (automatic time / NTP); the event was not tagged and "
        "its user's sessions are untouched. Publish it again only with a corrected timestamp."
    )
    return Rejected(entry_id, "clock_ahead", detail, raw)


def _media_probed(raw: bytes) -> bool:
    if len(raw) > BASE64_RUN:
        return True
    lowered = raw.lower()
    return (
        b"frame_data" in lowered
        or b"audio_payload" in lowered
        or b"data:" in lowered
        or b"\\" in lowered
    )


def find_raw_media(node: Any) -> str | None:
    """Name the first raw media payload inside an event, or None."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "frame_data" in node:
                return "frame_data"
            if "audio_payload" in node and _is_binary_audio(node):
                return "audio_payload in base64/bytes"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            if node[:5].lower() == "data:" and _is_media_url(node[:128].lower()):
                return "a data: URL"
            if len(node) >= BASE64_RUN and _BASE64_RUN.search(node):
                return f"a run of {BASE64_RUN}+ base64 characters"
    return None


def _is_media_url(head: str) -> bool:
    return head.startswith(_MEDIA_URL_PREFIXES) or ";base64," in head


def depth(node: Any) -> int:
    """How deeply objects and arrays nest (a flat object is 1)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in _children(node))
    return deepest


def _children(node: dict[str, Any] | list[Any]) -> Any:
    return node.values() if isinstance(node, dict) else node


def duplicate_key(raw: bytes) -> str | None:
    """The first key that appears twice in one object of `raw` (valid JSON), or None.
    orjson keeps the last value silently; this slower parse sees every pair."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items) and not found:
            seen: set[str] = set()
            for key, _value in items:
                if key in seen:
                    found.append(key)
                    break
                seen.add(key)
        return obj

    json.loads(raw, object_pairs_hook=pairs)
    return found[0] if found else None


def _is_binary_audio(node: dict[str, Any]) -> bool:
    payload = node["audio_payload"]
    formats = [node.get("audio_format")]
    if isinstance(payload, dict):
        formats.append(payload.get("audio_format"))
    return any(str(f).lower() in _BINARY_AUDIO_FORMATS for f in formats if f is not None)


def without_bytes(entry_id: bytes, raw: bytes, reason: str, detail: str) -> Rejected:
    digest = hashlib.sha256(raw).hexdigest()
    return Rejected(entry_id, reason, detail, None, data_sha256=digest, data_len=len(raw))


def _invalid(entry_id: bytes, raw: bytes, exc: ValidationError) -> Rejected:
    error = exc.errors(include_url=False, include_input=False)[0]
    field = str(error["loc"][0]) if error["loc"] else "event"
    if error["type"] == "missing":
        return Rejected(
            entry_id, "missing_field", f"Required field '{field}' is missing. {_FIX}", raw
        )
    where = ".".join(str(part) for part in error["loc"])
    reason = _REASON_BY_FIELD.get(field, "bad_field")
    return Rejected(entry_id, reason, f"Field '{where}' is invalid: {error['msg']}. {_FIX}", raw)
