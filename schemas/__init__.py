"""Pydantic models of the wire formats. No I/O."""

from schemas.control import ControlReply, SessionControlRequest
from schemas.message import SESSION_ID_PATTERN, USER_ID_PATTERN, A3CPMessage, Modality

__all__ = [
    "SESSION_ID_PATTERN",
    "USER_ID_PATTERN",
    "A3CPMessage",
    "ControlReply",
    "Modality",
    "SessionControlRequest",
]
