"""One atomic commit per batch: the partition owner's effects, applied by a short generic
script only while the owner's fencing epoch is current.

The script knows nothing of sessions. It checks, in order, and applies nothing when a
check fails:
1. the epoch key holds the owner's epoch (a worker that lost its partition is refused);
2. no input entry older than the batch is pending in the group (the batch's order: an
   older entry read by a worker that no longer owns the partition goes first);
3. none of the batch's record_ids is in the dedup set (scored within the window): the
   owner reads no dedup marks before a batch, it learns of a duplicate here, rarely;
4. every key it writes holds its expected type or nothing (Redis has no rollback: a
   command that failed half-way through would leave half a batch).
Then it runs the commands it was given, as given."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from tagger.keys import Keys
from tagger.rules import Outcome, encode_state
from tagger.rules.state import CounterNames, counters_by_name, number_named
from tagger.times import iso_ms

COMMIT_LUA = """
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {'fenced', epoch or ''} end
local group, first_id, min_score = ARGV[2], ARGV[3], tonumber(ARGV[4])
if first_id ~= '' then
  local older = redis.call('XPENDING', KEYS[2], group, '-', '(' .. first_id, 1)
  if #older > 0 then return {'older', older[1][1]} end
end
-- spec (ARGV[5]): how many record_ids, the expected key types, the rows, the bulk
-- commands, the other commands. ARGV[6]: the score of the dedup marks. From ARGV[7]:
-- the record_ids, the rows' values, each bulk command's values, then the byte strings
-- that the other commands name by number.
local spec = cjson.decode(ARGV[5])
local ids_at, at = 7, 7 + spec[1]
local present = {'duplicates'}
for j = ids_at, at - 1, 1000 do
  local scores = redis.call('ZMSCORE', KEYS[3], unpack(ARGV, j, math.min(j + 999, at - 1)))
  for k = 1, #scores do
    if scores[k] and tonumber(scores[k]) >= min_score then
      present[#present + 1] = ARGV[j + k - 1]
    end
  end
end
if #present > 1 then return present end
for _, expected in ipairs(spec[2]) do
  local actual = redis.call('TYPE', expected[1])['ok']
  if actual ~= expected[2] and actual ~= 'none' then return {'type', expected[1]} end
end
-- Rows: one call each, the head then field, value, field, value, ...
local head, fields = spec[3][1], spec[3][2]
local call, h, n_fields = {unpack(head)}, #head, #fields
for _ = 1, spec[3][3] do
  for k = 1, n_fields do
    call[h + 2 * k - 1], call[h + 2 * k] = fields[k], ARGV[at + k - 1]
  end
  redis.call(unpack(call))
  at = at + n_fields
end
-- Bulk commands: a head of two or three words, then a run of values, at most 1000 a
-- call (Lua's stack), passed straight from ARGV rather than copied into a table.
for _, bulk in ipairs(spec[4]) do
  local head, last = bulk[1], at + bulk[2] - 1
  for j = at, last, 1000 do
    local k = math.min(j + 999, last)
    if #head == 2 then
      redis.call(head[1], head[2], unpack(ARGV, j, k))
    else
      redis.call(head[1], head[2], head[3], unpack(ARGV, j, k))
    end
  end
  at = last + 1
end
for _, command in ipairs(spec[5]) do
  for k = 1, #command do
    if type(command[k]) == 'number' then command[k] = ARGV[at - 1 + command[k]] end
  end
  redis.call(unpack(command))
end
for j = ids_at, ids_at + spec[1] - 1, 500 do
  local marks, n = {'ZADD', KEYS[3]}, 2
  for k = j, math.min(j + 499, ids_at + spec[1] - 1) do
    marks[n + 1], marks[n + 2], n = ARGV[6], ARGV[k], n + 2
  end
  redis.call(unpack(marks))
end
return {'ok'}
"""


@dataclass(slots=True)
class Commit:
    """The commands of one commit, and what its checks need.

    The values that come once per event (record_ids, the output entries' fields, states,
    entry ids to ack) go as arguments of their own, which the script reads where they
    stand; the rest is one JSON argument (the other commands, naming byte strings by
    number). Measured with bench.instructions (server instructions per event, 500-event
    batches): every command as arguments of its own 64.6k, but redis-py then packed ~17
    arguments per event, more work than the server's (it sat 38% busy under a burst);
    every command in the JSON 73.7k (decoding it was half of the commit); this form
    ~4 arguments per event and fewer instructions than either (see docs/performance.md)."""

    first_id: str = ""  # oldest input entry of the batch ("" for none)
    record_ids: list[str] = field(default_factory=list)  # checked, then marked, for dedup
    dedup_score: int = 0  # the marks' score: when they were tagged
    types: dict[str, str] = field(default_factory=dict)
    # Rows: one command each, (head, field names), their values one after the other.
    row_head: list[str] = field(default_factory=list)
    row_fields: list[str] = field(default_factory=list)
    row_values: list[bytes | str] = field(default_factory=list)
    bulk: list[tuple[list[str], list[bytes | str]]] = field(default_factory=list)
    commands: list[list[Any]] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)

    def add(self, *command: Any) -> None:
        self.commands.append([self._arg(a) for a in command])

    def add_bulk(self, *head: str, values: list[bytes | str]) -> None:
        assert len(head) in (2, 3), "the script takes bulk heads of two or three words"
        if values:
            self.bulk.append((list(head), values))

    def _arg(self, value: Any) -> Any:
        if isinstance(value, bytes):
            self.blobs.append(value)
            return len(self.blobs)  # the n-th byte string, after the values
        return value if isinstance(value, str) else str(value)

    def args(self, epoch: int, group: str, dedup_min_score: int) -> list[Any]:
        n_rows = len(self.row_values) // len(self.row_fields) if self.row_fields else 0
        spec = [len(self.record_ids), list(self.types.items()),
                [self.row_head, self.row_fields, n_rows],
                [[head, len(values)] for head, values in self.bulk], self.commands]  # fmt: skip
        args: list[Any] = [epoch, group, self.first_id, dedup_min_score, orjson.dumps(spec),
                           self.dedup_score, *self.record_ids, *self.row_values]  # fmt: skip
        for _head, values in self.bulk:
            args += values
        return args + self.blobs


class Refused(Exception):
    """A check of the commit failed; nothing was applied."""

    def __init__(self, why: str, detail: list[bytes]) -> None:
        super().__init__(f"commit refused: {why} {[d.decode() for d in detail]}")
        self.why, self.detail = why, detail


class CommitScript:
    def __init__(self, client: Redis, keys: Keys) -> None:
        self.keys = keys
        # redis-py's Script loads itself again on NOSCRIPT (a restarted server).
        self._script = client.register_script(COMMIT_LUA)
        self._client = client

    async def apply(self, commit: Commit, epoch: int, dedup_min_score: int) -> None:
        """Apply `commit` under `epoch`; raises Refused, changing nothing, when a check fails."""
        keys = [self.keys.epoch, self.keys.input_stream, self.keys.dedup]
        args = commit.args(epoch, self.keys.group, dedup_min_score)
        reply: Any = await self._script(keys=keys, args=args, client=self._client)
        if reply[0] != b"ok":
            raise Refused(reply[0].decode(), list(reply[1:]))


def build_commit(
    keys: Keys,
    outcome: Outcome,
    names: CounterNames,
    now_ms: int,
    dead_letters: Iterable[Sequence[Any]] = (),
    first_id: bytes | str = "",
    acked_controls: Sequence[bytes] = (),
    replies: Iterable[dict[str, str]] = (),
) -> Commit:
    """The commands that make `outcome` durable, in the order the output must show."""
    first = first_id.decode() if isinstance(first_id, bytes) else first_id
    c = Commit(first_id=first, record_ids=outcome.fresh)
    c.types = {keys.output_stream: "stream", keys.active: "hash", keys.dedup: "zset"}
    c.row_head = ["XADD", keys.output_stream, "*"]
    c.row_fields = ["data", "user_id", "session_id", "kind"]
    values = c.row_values
    for r in outcome.records:
        values += (r.data, r.user_id, r.session_id, r.kind)
        if r.kind == "session.note":  # the registry counts them (the app searches those)
            c.add("HINCRBY", keys.session(r.session_id), "notes", 1)
            c.types[keys.session(r.session_id)] = "hash"
    for dead in dead_letters:
        c.types[keys.dead_letter_stream] = "stream"
        c.add("XADD", keys.dead_letter_stream, "*", *dead)
    for o in outcome.opened:
        meta = o.meta
        c.add("HSET", keys.session(o.sid), "session_id", o.sid, "user_id", o.user_id,
              "status", "active", "start_ms", o.start_ms, "start_time", iso_ms(o.start_ms),
              "opened_by", o.performer,
              "is_training_data", "true" if meta.get("is_training_data") else "false",
              "session_notes", meta.get("session_notes") or "",
              "training_intent_label", meta.get("training_intent_label") or "",
              "events", 0, "seq", 0)  # fmt: skip
        c.add("ZADD", keys.session_index, o.start_ms, o.sid)
        c.add("ZADD", keys.user_sessions(o.user_id), o.start_ms, o.sid)
        c.add("ZADD", keys.users, "GT", o.start_ms, o.user_id)
        c.types[keys.session_index] = c.types[keys.user_sessions(o.user_id)] = "zset"
        c.types[keys.users] = "zset"
    for user, s, reason, performer, end_ms in outcome.closed:
        figures: list[Any] = ["seq", s.seq, "events", s.seq, "last_ms", s.last_ms,
                              "first_event_ms", s.first_ms,
                              "last_event_ms", s.last_ms if s.seq > 0 else -1]  # fmt: skip
        for name, n in counters_by_name(s, names).items():
            figures += [name, n]
        c.add("HSET", keys.session(s.sid), *figures, "status", "closed", "close_reason", reason,
              "end_ms", end_ms, "end_time", iso_ms(end_ms), "closed_by", performer,
              "closed_at", iso_ms(now_ms))  # fmt: skip
        c.types[keys.session(s.sid)] = "hash"
        c.add("ZADD", keys.users, "GT", end_ms, user)
        c.types[keys.users] = "zset"
    for update in outcome.closed_updates.values():
        key = keys.session(update.sid)
        c.types[key] = "hash"
        fields: list[Any] = ["seq", update.seq, "events", update.seq]
        if update.first_ms is not None:
            fields += ["first_event_ms", update.first_ms]
        if update.last_ms is not None:
            fields += ["last_event_ms", update.last_ms]
        c.add("HSET", key, *fields)
        for name, n in update.increments.items():
            c.add("HINCRBY", key, name, n)
    states: list[bytes | str] = []
    ended: list[bytes | str] = []
    for user, state in outcome.states.items():
        if state is None:
            ended.append(user)
        else:
            number_named(state, names)
            states += [user, encode_state(state)]
    if names.added:  # before the states that use the new numbers are read back
        c.types[keys.counter_names] = "hash"
        c.add("HSET", keys.counter_names, *[x for kv in names.hash_fields().items() for x in kv])
    c.add_bulk("HSET", keys.active, values=states)
    c.add_bulk("HDEL", keys.active, values=ended)
    c.dedup_score = now_ms
    for reply in replies:
        c.types[keys.control_replies] = "stream"
        c.add("XADD", keys.control_replies, "*", *[x for kv in reply.items() for x in kv])
    c.add_bulk("XACK", keys.control_stream, keys.group, values=list(acked_controls))
    c.add_bulk("XACK", keys.input_stream, keys.group, values=list(outcome.acked))
    return c
