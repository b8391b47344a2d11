"""One batch: validate entries in Python, then apply every effect in one script call."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from tagger.intake import Accepted, Rejected, check_entry
from tagger.keys import Keys
from tagger.settings import Settings

TAG_SCRIPT = files("tagger").joinpath("tag.lua").read_text(encoding="utf-8")

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass(slots=True)
class Counts:
    """What the tagger did; summed over batches."""

    tagged: int = 0
    duplicates: int = 0
    dead: int = 0
    opened: int = 0
    already_acked: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: "Counts") -> None:
        self.tagged += other.tagged
        self.duplicates += other.duplicates
        self.dead += other.dead
        self.opened += other.opened
        self.already_acked += other.already_acked
        for reason, n in other.dead_by_reason.items():
            self.dead_by_reason[reason] = self.dead_by_reason.get(reason, 0) + n


class OlderEntriesPending(Exception):
    """The batch was not applied: an older entry is still pending in the group."""

    def __init__(self, entry_id: bytes) -> None:
        super().__init__(f"entry {entry_id.decode()} is older and still pending")
        self.entry_id = entry_id


class BatchTagger:
    """Holds the registered script; `tag` applies one batch of raw entries."""

    def __init__(self, client: Redis, settings: Settings) -> None:
        self.keys = Keys.from_settings(settings)
        # redis-py's Script re-loads itself on NOSCRIPT, so a server restart with an
        # empty script cache costs one extra round trip, not an outage.
        self._script = client.register_script(TAG_SCRIPT)
        self._client = client
        self._fixed_args: list[Any] = [
            self.keys.group,
            settings.session_timeout_s * 1000,
            settings.max_session_s * 1000,
            settings.dedup_window_s * 1000,
        ]
        self.counts = Counts()

    async def tag(self, entries: Sequence[Entry]) -> Counts:
        """Tag entries (in stream order) read from the input stream; returns this batch's
        counts, or raises OlderEntriesPending and changes nothing."""
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        for entry_id, fields in entries:
            result = check_entry(entry_id, fields)
            if isinstance(result, Accepted):
                accepted.append(result)
            else:
                rejected.append(result)
        args = [*self._fixed_args, entries[0][0], len(accepted)]
        for a in accepted:
            args += [a.entry_id, a.user_id, a.record_id, a.ts_ms, a.head, a.upstream_session_id]
        for r in rejected:
            dead_fields = r.stream_fields()
            args += [r.entry_id, len(dead_fields), *dead_fields]
        reply = await self._script(keys=self.keys.script_keys(), args=args, client=self._client)
        if reply[0] == -1:
            raise OlderEntriesPending(reply[1])
        tagged, duplicates, dead, opened, already_acked = reply
        by_reason: dict[str, int] = {}
        for r in rejected:
            by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
        counts = Counts(tagged, duplicates, dead, opened, already_acked, by_reason)
        self.counts.add(counts)
        return counts
