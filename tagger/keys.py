"""The one place that names Redis keys and streams."""

from dataclasses import dataclass

from tagger.settings import Settings


@dataclass(frozen=True, slots=True)
class Keys:
    input_stream: str
    output_stream: str
    dead_letter_stream: str
    control_stream: str
    control_replies: str
    group: str
    active: str  # hash: user_id -> "session_id start_ms last_ms seq first_ms"
    dedup: str  # sorted set: record_id scored by the time it was tagged (ms)
    session_index: str  # sorted set: session_id scored by start (event time, ms)
    deadlines: str  # sorted set: active session_id scored by its wall-clock deadline (ms)
    session_prefix: str  # + session_id: hash, the session's registry entry
    user_prefix: str  # + user_id: sorted set of the user's session_ids by start

    @classmethod
    def from_settings(cls, settings: Settings) -> "Keys":
        p = settings.state_prefix
        return cls(
            input_stream=settings.input_stream,
            output_stream=settings.output_stream,
            dead_letter_stream=settings.dead_letter_stream,
            control_stream=settings.control_stream,
            control_replies=f"{settings.control_stream}:replies",
            group=settings.group,
            active=f"{p}:active",
            dedup=f"{p}:dedup",
            session_index=f"{p}:sessions",
            deadlines=f"{p}:deadlines",
            session_prefix=f"{p}:session:",
            user_prefix=f"{p}:user:",
        )

    def sink_group(self, sink: str) -> str:
        """Consumer group of a file sink on the output stream."""
        return f"{self.group}-{sink}"

    def sink_lease(self, sink: str) -> str:
        """Lease key: one worker at a time writes a sink's files."""
        return f"{self.session_prefix.removesuffix('session:')}sink:{sink}:leader"

    def sink_pause(self, sink: str) -> str:
        """While this key exists the sink writes nothing and gives up its lease."""
        return f"{self.session_prefix.removesuffix('session:')}sink:{sink}:pause"

    def session(self, session_id: str) -> str:
        return self.session_prefix + session_id

    def user_sessions(self, user_id: str) -> str:
        return self.user_prefix + user_id

    def script_keys(self) -> list[str]:
        """KEYS of sessions.lua, in its order."""
        return [
            self.input_stream,
            self.output_stream,
            self.dead_letter_stream,
            self.active,
            self.dedup,
            self.session_index,
            self.deadlines,
            self.control_stream,
            self.control_replies,
        ]
