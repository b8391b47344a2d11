"""The session-manager script (sessions.lua): loaded once, called by operation."""

from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from tagger.keys import Keys
from tagger.settings import Settings

SESSIONS_LUA = files("tagger").joinpath("sessions.lua").read_text(encoding="utf-8")


class SessionScript:
    """Every session change goes through here, as one atomic script call."""

    def __init__(self, client: Redis, settings: Settings, keys: Keys | None = None) -> None:
        self.keys = keys or Keys.from_settings(settings)  # the partition it works on
        # redis-py's Script re-loads itself on NOSCRIPT, so a server restart with an
        # empty script cache costs one extra round trip, not an outage.
        self._script = client.register_script(SESSIONS_LUA)
        self._client = client
        self._common: list[Any] = [
            settings.group,
            settings.session_timeout_s * 1000,
            settings.max_session_s * 1000,
            settings.dedup_window_s * 1000,
            self.keys.session_prefix,
            self.keys.user_prefix,
        ]

    async def call(self, op: str, args: list[Any]) -> list[Any]:
        """Run one operation ('tag', 'sweep' or 'control') with its own arguments."""
        reply: list[Any] = await self._script(
            keys=self.keys.script_keys(), args=[op, *self._common, *args], client=self._client
        )
        return reply
