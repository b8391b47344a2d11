"""One batch: validate entries in Python, then apply every effect in one script call."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from tagger.errors import TaggerError
from tagger.intake import Accepted, Rejected, check_entry, payload_of, without_bytes
from tagger.keys import partition_of
from tagger.script import SessionScript

Entry = tuple[bytes, dict[bytes, bytes]]
# Per accepted event seven values for the script, one after the other (see sessions.lua's
# `tag`); their heads; the rejected.
Checked = tuple[list[str | int], list[bytes], list[Rejected]]


@dataclass(slots=True)
class Counts:
    """What the tagger did; summed over batches."""

    tagged: int = 0
    duplicates: int = 0
    dead: int = 0
    opened: int = 0
    already_acked: int = 0
    closed: int = 0  # sessions rolled by a later event (timeout or max duration)
    late: int = 0  # events older than the user's latest session
    upstream_mismatch: int = 0  # events whose incoming session_id was not the one given
    closed_max_duration: int = 0  # of `closed`, those that reached TAGGER_MAX_SESSION_S
    dead_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: "Counts") -> None:
        for f in dataclasses.fields(self):
            if f.name != "dead_by_reason":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for reason, n in other.dead_by_reason.items():
            self.dead_by_reason[reason] = self.dead_by_reason.get(reason, 0) + n


class OlderEntriesPending(Exception):
    """The batch was not applied: an older entry is still pending in the group."""

    def __init__(self, entry_id: bytes) -> None:
        super().__init__(f"entry {entry_id.decode()} is older and still pending")
        self.entry_id = entry_id


class CorruptState(TaggerError):
    """A key the batch needs holds a foreign value; the batch was not applied."""


class BatchTagger:
    """`tag` validates a batch of raw entries and applies it in one script call."""

    def __init__(self, script: SessionScript, counts: Counts | None = None) -> None:
        self._script = script
        self.counts = Counts() if counts is None else counts  # shared by a worker's partitions

    async def tag(self, entries: Sequence[Entry], checked: Checked | None = None) -> Counts:
        """Tag entries (in stream order) read from the input stream, checked by `check`
        beforehand or now; returns this batch's counts, or raises OlderEntriesPending and
        changes nothing."""
        return await self._apply(entries, *(checked or self.check(entries)))

    def check(self, entries: Sequence[Entry]) -> Checked:
        """Validate entries (no server involved; safe in a thread): per accepted event its
        values for the script, their heads, the rejected."""
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        for entry_id, fields in entries:
            result = check_entry(entry_id, fields)
            if isinstance(result, Accepted) and not self._script.keys.owns(result.user_id):
                result = self._misrouted(result, payload_of(fields) or b"")
            if isinstance(result, Accepted):
                accepted.append(result)
            else:
                rejected.append(result)
        meta: list[str | int] = [
            value
            for a in accepted
            for value in (
                a.entry_id.decode(),
                a.user_id,
                a.record_id,
                a.ts_ms,
                a.upstream_session_id,
                a.modality,
                a.source,
            )
        ]
        return meta, [a.head for a in accepted], rejected

    def _misrouted(self, event: Accepted, raw: bytes) -> Rejected:
        # Tagging it here would give the user sessions in two partitions at once.
        keys = self._script.keys
        right = partition_of(event.user_id, keys.partitions)
        detail = (
            f"user_id {event.user_id!r} belongs to partition {right} of {keys.partitions} "
            f"(crc32(user_id) mod {keys.partitions}), not {keys.partition}; publish it to that "
            "partition's input stream (`tagger publish` and tagger.publish.publish_event route "
            "by user)."
        )
        return Rejected(event.entry_id, "wrong_partition", detail, raw)

    async def reject(self, entries: Sequence[Entry], reason: str, detail: str) -> Counts:
        """Dead-letter entries as they are (hash and length kept, not the bytes)."""
        rejected = [without_bytes(i, payload_of(f) or b"", reason, detail) for i, f in entries]
        return await self._apply(entries, [], [], rejected)

    async def _apply(
        self,
        entries: Sequence[Entry],
        meta: list[str | int],
        heads: list[bytes],
        rejected: list[Rejected],
    ) -> Counts:
        # Entries come in stream order, so the first and last ids bound the batch.
        args: list[bytes | str | int] = [entries[0][0], entries[-1][0], len(heads)]
        args += [orjson.dumps(meta), *heads]
        for r in rejected:
            dead_fields = r.stream_fields()
            args += [r.entry_id, len(dead_fields), *dead_fields]
        reply = await self._script.call("tag", args)
        if reply[0] == -1:
            raise OlderEntriesPending(reply[1])
        if reply[0] == -2:
            raise CorruptState(
                f"key {reply[1].decode()} holds the wrong type of value, so nothing of this "
                "batch was applied; inspect it (TYPE, then DEL if it is not the tagger's)"
            )
        by_reason: dict[str, int] = {}
        for r in rejected:
            by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
        tagged, duplicates, dead, opened, already_acked, closed, late, mismatch, max_d = reply
        counts = Counts(
            tagged,
            duplicates,
            dead,
            opened,
            already_acked,
            closed,
            late,
            mismatch,
            max_d,
            by_reason,
        )
        self.counts.add(counts)
        return counts
