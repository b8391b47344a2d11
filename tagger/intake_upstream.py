"""Upstream A3CP's own A3CPMessage rules on three optional fields, checked on what the
tagger's intake accepted already (tagger/intake.py): what upstream's model refuses, the
tagger refuses too, since modules downstream validate with that model."""

import re
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

FIX = "Fix the publishing module and publish the event again."
# The facts come from upstream's schemas/a3cp_message (see
# tests/fixtures/upstream_messages/README.md). capture_id is a UUID as pydantic reads
# one from text: 32 hex digits, or 8-4-4-4-12, bare, in braces or after `urn:uuid:`;
# either case, any version.
_HEX = "[0-9A-Fa-f]"
_UUID_GROUPS = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_CAPTURE_ID = re.compile(
    rf"{_UUID_GROUPS}|{_HEX}{{32}}|\{{{_UUID_GROUPS}\}}|urn:uuid:{_UUID_GROUPS}"
)
ANNOTATION_EVENT = "capture.open"  # the one `event` that may carry an `annotation`
_REF_FIELDS = ("uri", "hash", "encoding", "shape", "dtype", "format")
_REF_FIX = (
    'Reference the .npz feature file as {"uri": "<path>.npz", "hash": '
    '"sha256:<hex digest>", "encoding": "<extractor>", "shape": [T, D], "dtype": '
    '"<e.g. float32>", "format": "npz"}, or leave raw_features_ref out.'
)
_LAX_INT = TypeAdapter(int)  # an item of upstream's `shape: list[int]` as pydantic reads it


def upstream_problem(event: dict[str, Any]) -> tuple[str, str] | None:
    """Upstream A3CPMessage's rules on capture_id, annotation and raw_features_ref
    (each may be absent or null): the first broken one's (reason, detail), else None."""
    capture_id = event.get("capture_id")
    if capture_id is not None and not (
        type(capture_id) is str and _CAPTURE_ID.fullmatch(capture_id)
    ):
        detail = (
            f"capture_id {_shown(capture_id)} is not a UUID. Send one UUID string per "
            "capture (e.g. str(uuid.uuid4())), the same on every event of that capture, "
            f"or leave capture_id out. {FIX}"
        )
        return "bad_capture_id", detail
    annotation = event.get("annotation")
    if annotation is not None:
        kind = event.get("event")
        if kind != ANNOTATION_EVENT:
            detail = (
                f"annotation is only allowed on a {ANNOTATION_EVENT!r} event, and this "
                f"event's 'event' is {_shown(kind) if 'event' in event else 'missing'}. "
                f"Send the capture's label once, on its {ANNOTATION_EVENT} event, and "
                f"leave annotation out of every other event. {FIX}"
            )
            return "annotation_outside_capture_open", detail
        if not (isinstance(annotation, dict) and isinstance(annotation.get("intent"), str)):
            detail = (
                f"annotation {_shown(annotation)} is not an object with a string 'intent' "
                f'(e.g. {{"intent": "hungry"}}). {FIX}'
            )
            return "bad_annotation", detail
    ref = event.get("raw_features_ref")
    if ref is not None and (problem := _ref_problem(ref)) is not None:
        detail = f"raw_features_ref is not a feature-file reference: {problem}. {_REF_FIX}"
        return "bad_raw_features_ref", detail
    return None


def _ref_problem(ref: Any) -> str | None:
    if (  # the usual reference, at the cost of a few lookups
        type(ref) is dict
        and type(uri := ref.get("uri")) is str
        and uri.endswith(".npz")  # so not blank either
        and type(digest := ref.get("hash")) is str
        and digest.startswith("sha256:")
        and type(encoding := ref.get("encoding")) is str
        and encoding.strip()
        and type(dtype := ref.get("dtype")) is str
        and dtype.strip()
        and type(shape := ref.get("shape")) is list
        and len(shape) == 2
        and type(shape[0]) is int
        and type(shape[1]) is int
        and ref.get("format") == "npz"
    ):
        return None
    return _ref_problem_in_full(ref)


def _ref_problem_in_full(ref: Any) -> str | None:
    if not isinstance(ref, dict):
        return f"it is {_shown(ref)}, not an object"
    for name in _REF_FIELDS:
        if name not in ref:
            return f"'{name}' is missing"
    uri, digest, shape = ref["uri"], ref["hash"], ref["shape"]
    if not isinstance(uri, str) or not uri.strip():
        return f"'uri' is {_shown(uri)}, not a path or URI"
    if not uri.endswith(".npz"):
        return f"'uri' {_shown(uri)} does not end in .npz"
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        return f"'hash' {_shown(digest)} does not start with 'sha256:'"
    for name in ("encoding", "dtype"):
        if not isinstance(ref[name], str) or not ref[name].strip():
            return f"'{name}' is {_shown(ref[name])}, not a non-empty string"
    if not isinstance(shape, list) or len(shape) != 2 or not all(map(_is_int, shape)):
        return f"'shape' is {_shown(shape)}, not two integers [T, D]"
    if ref["format"] != "npz":
        return f"'format' is {_shown(ref['format'])}, not \"npz\""
    return None


def _is_int(value: Any) -> bool:
    if type(value) is int:
        return True
    try:  # what pydantic's lax int takes too (42.0, "42", true): upstream accepts those
        _LAX_INT.validate_python(value)
    except ValidationError:
        return False
    return True


def _shown(value: Any) -> str:
    """A value as JSON, cut to 48 characters (safe to print in a detail)."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 48 else text[:45] + "..."
