"""The one place that names Redis keys and streams.

With several partitions (or on a cluster) every name of partition p carries the hash tag
`{p<p>}`: `a3cp:messages:{p0}`, `a3cp:tagger:{p0}:active`, ... so all keys one script call
touches live in one cluster slot. A user's events always go to partition_of(user_id)."""

import zlib
from dataclasses import dataclass

from tagger.settings import Settings


def partition_of(user_id: str, partitions: int) -> int:
    """The partition of a user: crc32 of the UTF-8 user id, modulo the partition count
    (zlib's CRC-32, the same as Java's CRC32, Go's crc32.ChecksumIEEE, Node's zlib.crc32)."""
    return zlib.crc32(user_id.encode()) % partitions


def workers_key(settings: Settings, role: str) -> str:
    """Sorted set of the live workers of one role ("tag", "sinks"); see tagger/membership.py."""
    return f"{settings.state_prefix}:workers:{settings.group}:{role}"


def partition_name(name: str, settings: Settings, partition: int) -> str:
    """`name` as partition `partition` calls it: unchanged without hash tags."""
    return f"{name}:{{p{partition}}}" if settings.hash_tagged else name


@dataclass(frozen=True, slots=True)
class Keys:
    input_stream: str
    output_stream: str
    dead_letter_stream: str
    control_stream: str
    control_replies: str
    group: str
    active: str  # hash: user_id -> the active session's state (tagger/rules/state.py)
    dedup: str  # sorted set: record_id scored by the time it was tagged (ms)
    session_index: str  # sorted set: session_id scored by start (event time, ms)
    deadlines: str  # sorted set: each session's deadline as the Lua-script release kept it
    session_prefix: str  # + session_id: hash, the session's registry entry
    user_prefix: str  # + user_id: sorted set of the user's session_ids by start
    counter_names: str  # hash: counter name -> its number in active states, "#<n>" -> name
    users: str  # sorted set: user id -> time of their latest session's start or end (ms)
    owner: str  # string: the consumer that owns the partition now (a lease, PX)
    epoch: str  # integer: raised by each new owner; a commit under an older one is refused
    partition: int
    partitions: int

    @classmethod
    def from_settings(cls, settings: Settings, partition: int = 0) -> "Keys":
        """The keys of one partition (the only one, by default)."""
        if not 0 <= partition < settings.partitions:
            raise ValueError(f"partition {partition} out of 0..{settings.partitions - 1}")

        def named(name: str) -> str:
            return partition_name(name, settings, partition)

        p = named(settings.state_prefix)
        control = named(settings.control_stream)
        return cls(
            input_stream=named(settings.input_stream),
            output_stream=named(settings.output_stream),
            dead_letter_stream=named(settings.dead_letter_stream),
            control_stream=control,
            control_replies=f"{control}:replies",
            group=settings.group,
            active=f"{p}:active",
            dedup=f"{p}:dedup",
            session_index=f"{p}:sessions",
            deadlines=f"{p}:deadlines",
            session_prefix=f"{p}:session:",
            user_prefix=f"{p}:user:",
            counter_names=f"{p}:counter-names",
            users=f"{p}:users",
            owner=f"{p}:owner",
            epoch=f"{p}:owner-epoch",
            partition=partition,
            partitions=settings.partitions,
        )

    @classmethod
    def every_partition(cls, settings: Settings) -> list["Keys"]:
        return [cls.from_settings(settings, p) for p in range(settings.partitions)]

    @classmethod
    def of_user(cls, settings: Settings, user_id: str) -> "Keys":
        """The keys of the partition that holds `user_id`'s events and sessions."""
        return cls.from_settings(settings, partition_of(user_id, settings.partitions))

    def owns(self, user_id: str) -> bool:
        return self.partitions == 1 or partition_of(user_id, self.partitions) == self.partition

    def sink_group(self, sink: str) -> str:
        """Consumer group of a file sink on the output stream."""
        return f"{self.group}-{sink}"

    def sink_lease(self, sink: str) -> str:
        """Lease key: one worker at a time writes a sink's files."""
        return self._sink_key(sink, "leader")

    def sink_pause(self, sink: str) -> str:
        """While this key exists the sink writes nothing and gives up its lease."""
        return self._sink_key(sink, "pause")

    def sink_read(self, sink: str) -> str:
        """The last id a sink read (written where a WAIT for replicas can cover it)."""
        return self._sink_key(sink, "read")

    def _sink_key(self, sink: str, what: str) -> str:
        # Under the partition's state prefix, so it shares the partition's hash tag.
        return f"{self.session_prefix.removesuffix('session:')}sink:{sink}:{what}"

    def session(self, session_id: str) -> str:
        return self.session_prefix + session_id

    def user_sessions(self, user_id: str) -> str:
        return self.user_prefix + user_id

    def script_keys(self) -> list[str]:
        """The partition's own keys: the ten the previous release's script took as KEYS, in
        its order (tests run that script to write state as it did), then the owner's lease
        and epoch."""
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
            self.counter_names,
            self.owner,
            self.epoch,
        ]
