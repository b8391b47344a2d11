"""Explicit session control: the worker's handler and the client that asks and waits."""

import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from redis import Redis

from schemas import ControlReply, SessionControlRequest
from tagger.errors import TaggerError
from tagger.intake import payload_of
from tagger.keys import Keys
from tagger.registry import user_partition
from tagger.rules import ControlRequest
from tagger.times import epoch_ms, now_iso_ms

if TYPE_CHECKING:
    from tagger.runtime.owner import PartitionOwner

# A request nobody handled for this long (no tagger was running) is refused, not applied:
# a caregiver who was told "no answer" must not find the session started later.
REQUEST_TTL_S = 300


class NoReply(TaggerError):
    """No tagger answered a control request in time."""


async def handle_request(
    owner: "PartitionOwner", entry_id: bytes, fields: dict[bytes, bytes]
) -> ControlReply:
    """Apply one control entry through its partition's owner; every entry gets exactly
    one reply, committed with its ack and its effects."""
    raw = payload_of(fields) or b""
    try:
        request = SessionControlRequest.model_validate_json(raw)
    except ValidationError as exc:
        request_id, reason = _refusal(raw, exc)
        await owner.answer(entry_id, request_id, reason)
        return ControlReply(request_id=request_id, status="error", session_id="", reason=reason)
    ts_ms = epoch_ms(request.timestamp)
    request_id = str(request.record_id)
    if ts_ms < time.time() * 1000 - REQUEST_TTL_S * 1000:
        reason = f"expired: asked over {REQUEST_TTL_S} s ago; ask again"
        await owner.answer(entry_id, request_id, reason)
        return ControlReply(request_id=request_id, status="error", session_id="", reason=reason)
    meta = {
        "session_notes": request.session_notes or "",
        "is_training_data": request.is_training_data,
        "training_intent_label": request.training_intent_label or "",
    }
    status, session_id, reason = await owner.control(
        entry_id,
        ControlRequest(
            action=request.action,
            request_id=request_id,
            user_id=request.user_id,
            performer_id=request.performer_id,
            ts_ms=ts_ms,
            session_id=request.session_id or "",
            meta=meta,
            supersede=request.supersede,
            note=request.note or "",
        ),
    )
    return ControlReply(
        request_id=request_id,
        status=status,
        session_id=session_id,
        reason=reason,
    )


def _refusal(raw: bytes, exc: ValidationError) -> tuple[str, str]:
    try:
        request_id = str(orjson.loads(raw).get("record_id", ""))
    except (orjson.JSONDecodeError, AttributeError):
        request_id = ""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in error["loc"]) or "request"
    return request_id, f"invalid_request: {where}: {error['msg']}"


def request(
    client: Redis,
    partitions: Sequence[Keys],
    action: str,
    user_id: str,
    timeout_s: float = 10.0,
    record_id: str | None = None,
    timestamp: str | None = None,
    **fields: Any,
) -> ControlReply:
    """Publish a start, end or note request (to the user's partition) and wait for the
    reply."""
    keys = user_partition(partitions, user_id)
    record_id = record_id or str(uuid.uuid4())
    body = {
        "action": action,
        "schema_version": "1.0.1",
        "record_id": record_id,
        "user_id": user_id,
        "timestamp": timestamp or now_iso_ms(),
        **{k: v for k, v in fields.items() if v is not None},
    }
    last: Any = client.xrevrange(keys.control_replies, count=1)
    after = last[0][0] if last else b"0-0"
    client.xadd(keys.control_stream, {"data": orjson.dumps(body)})
    deadline = time.monotonic() + timeout_s
    while (left_s := deadline - time.monotonic()) > 0:
        # Short blocks: a client's socket timeout must never cut a long one.
        block_ms = max(1, min(1000, int(left_s * 1000)))
        replies: Any = client.xread({keys.control_replies: after}, block=block_ms)
        for _stream, entries in replies:
            for entry_id, reply in entries:
                after = entry_id
                if reply[b"request_id"].decode() == record_id:
                    return ControlReply.model_validate(
                        {k.decode(): v.decode() for k, v in reply.items()}
                    )
    raise NoReply(
        f"no tagger answered request {record_id} within {timeout_s:.0f} s; start one with "
        f"`tagger run` (same TAGGER_* settings). The request stays queued and is applied if "
        f"a tagger starts within {REQUEST_TTL_S} s of it; after that it is refused"
    )
