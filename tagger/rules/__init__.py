"""The session rules and their state: pure logic, no I/O (see sessions.py)."""

from tagger.rules.outcome import Counts, Outcome, Record
from tagger.rules.sessions import (
    LATE_CANDIDATES,
    ControlRequest,
    Limits,
    Span,
    control,
    needs_history,
    new_sid,
    sweep,
    tag,
)
from tagger.rules.state import CounterNames, SessionState, decode_state, encode_state

__all__ = [
    "LATE_CANDIDATES",
    "ControlRequest",
    "CounterNames",
    "Counts",
    "Limits",
    "Outcome",
    "Record",
    "SessionState",
    "Span",
    "control",
    "decode_state",
    "encode_state",
    "needs_history",
    "new_sid",
    "sweep",
    "tag",
]
