"""An active session's state and its one codec (every version ever written is read).

The partition's owner keeps these in memory and writes the state of each user a batch
touched into the active hash (user_id -> encoded state), in the batch's commit. Readers
of the registry (tagger/registry.py) decode the same bytes with `decode_state`.

Versions read: the text form of the earliest releases ("sid start last seq first", its
counters in the registry hash), 2 and 3 (binary, packed by the previous release's Lua
script), and 4 (JSON, written since the rules moved to Python). Only 4 is written."""

import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

# A counter's number in the partition's counter-names hash fits in two bytes (version 3
# packed it so); past the last number, new names count together under OVERFLOW, so a
# producer that sends ever new sources cannot make the names hash, or a state, endless.
MAX_COUNTER_NUMBER = 65535
OVERFLOW = "source:(more counter names than a partition numbers)"

_V23_HEAD = struct.Struct("<BddddBH")
_V3_COUNTER = struct.Struct("<Hd")
_V2_VALUE = struct.Struct("<d")


@dataclass(slots=True)
class SessionState:
    """What the rules need of an active session, and its figures until it closes."""

    sid: str
    start_ms: int
    last_ms: int  # latest event time (the start while it has none)
    seq: int  # events so far
    first_ms: int  # earliest event time, -1 while it has none
    deadline_ms: int  # wall clock: closed as idle when this passes with no event
    counts: dict[int, int] = field(default_factory=dict)  # counter number -> value
    # Start metadata, repeated by the session.end record (empty for stream-opened ones).
    meta: dict[str, Any] = field(default_factory=dict)
    # Counters by name not yet numbered (a state of version 2 or the text form).
    named: dict[str, int] = field(default_factory=dict)

    def copy(self) -> "SessionState":
        # By hand: dataclasses.replace cost a batch more than its rules (profiled).
        return SessionState(
            self.sid, self.start_ms, self.last_ms, self.seq, self.first_ms, self.deadline_ms,
            dict(self.counts), self.meta, dict(self.named),
        )  # fmt: skip


@dataclass(slots=True)
class CounterNames:
    """The partition's counter numbering (hash `counter_names`: name -> n, "#n" -> name,
    "#last"). `number` gives new numbers and remembers them in `added` for the commit."""

    numbers: dict[str, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    last: int = 0
    added: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> "CounterNames":
        table = cls()
        for key, value in raw.items():
            name = key.decode()
            if name == "#last":
                table.last = int(value)
            elif name.startswith("#"):
                table.names[int(name[1:])] = value.decode()
            else:
                table.numbers[name] = int(value)
        return table

    def number(self, name: str) -> int:
        n = self.numbers.get(name)
        if n is None:
            self.last += 1
            n = self.last if self.last < MAX_COUNTER_NUMBER else MAX_COUNTER_NUMBER
            self.numbers[name] = n
            self.added[name] = n
            if n == MAX_COUNTER_NUMBER:
                self.names[n] = OVERFLOW
            else:
                self.names[n] = name
        return n

    def forget_added(self) -> None:
        """Undo the numbers given since the last commit (that commit was not applied)."""
        for name, n in self.added.items():
            del self.numbers[name]
            if n < MAX_COUNTER_NUMBER:
                del self.names[n]
        self.last -= len(self.added)
        self.added.clear()

    def name(self, n: int) -> str:
        # (A number the hash lacks: the hash was deleted by hand.)
        return self.names.get(n, f"unknown_counter:{n}")

    def hash_fields(self) -> dict[str, str | int]:
        """The fields `added` puts into the counter-names hash (names past the last number
        are not kept: the hash stops growing there)."""
        fields: dict[str, str | int] = {}
        for name, n in self.added.items():
            if n < MAX_COUNTER_NUMBER:
                fields[name] = n
            fields[f"#{n}"] = self.names[n]
        if self.added:
            fields["#last"] = self.last
        return fields


def encode_state(state: SessionState) -> bytes:
    """Version 4: JSON. Longer than 64 bytes, so the active hash never stays a listpack
    (whose lookups are linear in its length)."""
    doc: dict[str, Any] = {
        "v": 4,
        "sid": state.sid,
        "start": state.start_ms,
        "last": state.last_ms,
        "seq": state.seq,
        "first": state.first_ms,
        "deadline": state.deadline_ms,
        "counts": [x for pair in state.counts.items() for x in pair],
    }
    if state.meta:
        doc["meta"] = state.meta
    return orjson.dumps(doc)


def state_version(packed: bytes) -> int:
    """4, 3, 2, or 1 for the text form."""
    if packed.startswith(b'{"v":4,'):  # (orjson keeps the keys in encode_state's order)
        return 4
    if packed[:1] == b"{":
        raise ValueError(
            f"an active-session state of a newer release ({packed[:12]!r}...); run that "
            "release or a newer one: this one cannot read it"
        )
    return packed[0] if packed[0] in (2, 3) else 1


def decode_state(packed: bytes, deadline_ms: int = 0) -> SessionState:
    """A state of any version. Counters of version 2 come in `named`; those of the text
    form live in the registry hash, which the caller reads (see `registry_counts`).
    `deadline_ms`: for versions before 4, which kept it in a sorted set of its own."""
    version = state_version(packed)
    if version == 4:
        doc = orjson.loads(packed)
        flat = doc["counts"]
        return SessionState(
            sid=doc["sid"],
            start_ms=doc["start"],
            last_ms=doc["last"],
            seq=doc["seq"],
            first_ms=doc["first"],
            deadline_ms=doc["deadline"],
            counts=dict(zip(flat[::2], flat[1::2], strict=True)),
            meta=doc.get("meta", {}),
        )
    if version == 1:
        sid, start, last, seq, first = packed.decode().split(" ")
        return SessionState(sid, int(start), int(last), int(seq), int(first), deadline_ms)
    _, start, last, seq, first, sid_len, n_counters = _V23_HEAD.unpack_from(packed)
    pos = _V23_HEAD.size
    state = SessionState(
        packed[pos : pos + sid_len].decode(),
        int(start),
        int(last),
        int(seq),
        int(first),
        deadline_ms,
    )
    pos += sid_len
    for _ in range(n_counters):
        if version == 3:
            number, value = _V3_COUNTER.unpack_from(packed, pos)
            state.counts[number] = int(value)
            pos += _V3_COUNTER.size
        else:  # its value, its name, "\n"
            (value,) = _V2_VALUE.unpack_from(packed, pos)
            stop = packed.index(b"\n", pos + 8)
            state.named[packed[pos + 8 : stop].decode()] = int(value)
            pos = stop + 1
    return state


def registry_counts(raw: dict[bytes, bytes]) -> dict[str, int]:
    """The counters a registry hash holds (the text form kept them there)."""
    counts = {}
    for key, value in raw.items():
        name = key.decode()
        if name == "late_events" or name.startswith(("modality:", "source:")):
            counts[name] = int(value)
    return counts


def counters_by_name(state: SessionState, names: CounterNames) -> dict[str, int]:
    """Every counter of the session by name (numbered ones and any still named)."""
    found: dict[str, int] = {}
    for n, value in state.counts.items():
        name = names.name(n)
        found[name] = found.get(name, 0) + value
    for name, value in state.named.items():
        found[name] = found.get(name, 0) + value
    return found


def number_named(state: SessionState, names: CounterNames) -> None:
    """Give a state's counters by name their numbers (before it is encoded)."""
    for name, value in state.named.items():
        n = names.number(name)
        state.counts[n] = state.counts.get(n, 0) + value
    state.named.clear()
