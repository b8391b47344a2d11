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
local spec = cjson.decode(ARGV[5])
local ids, present = spec[1], {'duplicates'}
for j = 1, #ids, 1000 do
  local scores = redis.call('ZMSCORE', KEYS[3], unpack(ids, j, math.min(j + 999, #ids)))
  for k = 1, #scores do
    if scores[k] and tonumber(scores[k]) >= min_score then
      present[#present + 1] = ids[j + k - 1]
    end
  end
end
if #present > 1 then return present end
for _, expected in ipairs(spec[2]) do
  local actual = redis.call('TYPE', expected[1])['ok']
  if actual ~= expected[2] and actual ~= 'none' then return {'type', expected[1]} end
end
for _, command in ipairs(spec[3]) do
  for k = 1, #command do
    if type(command[k]) == 'number' then command[k] = ARGV[5 + command[k]] end
  end
  redis.call(unpack(command))
end
return {'ok'}
"""

CHUNK = 1000  # items per command: Lua's stack holds ~8,000 values


@dataclass(slots=True)
class Commit:
    """The commands of one commit, and what its checks need.

    Sent as one JSON argument (the commands, their text arguments) plus one argument per
    byte string (event data, states), which the JSON names by number: redis-py packs each
    argument on its own, and a batch's ~12 arguments per event cost the worker more than
    the server spends on the whole commit (the throughput bench: the server 38% busy)."""

    first_id: bytes | str = ""  # oldest input entry of the batch ("" for none)
    record_ids: list[str] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    commands: list[list[Any]] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)

    def add(self, *command: Any) -> None:
        self.commands.append([self._arg(a) for a in command])

    def add_chunked(self, head: Sequence[Any], items: Sequence[Any], per_item: int = 1) -> None:
        step = CHUNK * per_item
        for j in range(0, len(items), step):
            self.add(*head, *items[j : j + step])

    def _arg(self, value: Any) -> Any:
        if isinstance(value, bytes):
            self.blobs.append(value)
            return len(self.blobs)  # ARGV[5 + n] in the script
        return value if isinstance(value, str) else str(value)

    def args(self, epoch: int, group: str, dedup_min_score: int) -> list[Any]:
        spec = orjson.dumps([self.record_ids, list(self.types.items()), self.commands])
        return [epoch, group, self.first_id, dedup_min_score, spec, *self.blobs]


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
    c = Commit(first_id=first_id.decode() if isinstance(first_id, bytes) else first_id,
               record_ids=outcome.fresh)  # fmt: skip
    c.types = {keys.output_stream: "stream", keys.active: "hash", keys.dedup: "zset"}
    out, blobs, commands = keys.output_stream, c.blobs, c.commands
    for r in outcome.records:  # the hot loop: built directly rather than through add()
        blobs.append(r.data)
        commands.append(["XADD", out, "*", "data", len(blobs), "user_id", r.user_id,
                         "session_id", r.session_id, "kind", r.kind])  # fmt: skip
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
        c.types[keys.session_index] = c.types[keys.user_sessions(o.user_id)] = "zset"
    for _user, s, reason, performer, end_ms in outcome.closed:
        figures: list[Any] = ["seq", s.seq, "events", s.seq, "last_ms", s.last_ms,
                              "first_event_ms", s.first_ms,
                              "last_event_ms", s.last_ms if s.seq > 0 else -1]  # fmt: skip
        for name, n in counters_by_name(s, names).items():
            figures += [name, n]
        c.add("HSET", keys.session(s.sid), *figures, "status", "closed", "close_reason", reason,
              "end_ms", end_ms, "end_time", iso_ms(end_ms), "closed_by", performer,
              "closed_at", iso_ms(now_ms))  # fmt: skip
        c.types[keys.session(s.sid)] = "hash"
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
    states: list[Any] = []
    ended: list[str] = []
    for user, state in outcome.states.items():
        if state is None:
            ended.append(user)
        else:
            number_named(state, names)
            states += [user, encode_state(state)]
    if names.added:  # before the states that use the new numbers are read back
        c.types[keys.counter_names] = "hash"
        c.add("HSET", keys.counter_names, *[x for kv in names.hash_fields().items() for x in kv])
    c.add_chunked(("HSET", keys.active), states, per_item=2)
    c.add_chunked(("HDEL", keys.active), ended)
    fresh = [x for record_id in outcome.fresh for x in (now_ms, record_id)]
    c.add_chunked(("ZADD", keys.dedup), fresh, per_item=2)
    for reply in replies:
        c.types[keys.control_replies] = "stream"
        c.add("XADD", keys.control_replies, "*", *[x for kv in reply.items() for x in kv])
    c.add_chunked(("XACK", keys.control_stream, keys.group), [i.decode() for i in acked_controls])
    c.add_chunked(("XACK", keys.input_stream, keys.group), [i.decode() for i in outcome.acked])
    return c
