"""The one place that names Redis keys and streams."""

from dataclasses import dataclass

from tagger.settings import Settings


@dataclass(frozen=True, slots=True)
class Keys:
    input_stream: str
    output_stream: str
    dead_letter_stream: str
    group: str
    session_state: str  # hash: user_id -> "session_id start_ms last_ms"
    dedup: str  # sorted set: record_id scored by the time it was tagged (ms)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Keys":
        return cls(
            input_stream=settings.input_stream,
            output_stream=settings.output_stream,
            dead_letter_stream=settings.dead_letter_stream,
            group=settings.group,
            session_state=f"{settings.state_prefix}:sessions",
            dedup=f"{settings.state_prefix}:dedup",
        )

    def script_keys(self) -> list[str]:
        """KEYS of tag.lua, in its order."""
        return [
            self.input_stream,
            self.output_stream,
            self.dead_letter_stream,
            self.session_state,
            self.dedup,
        ]
