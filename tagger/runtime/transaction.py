"""The commit as a MULTI/EXEC transaction on one server: the same checks as the commit
script (tagger/runtime/commit.py), no Lua.

Two round trips on a connection the partition owner keeps to itself:
1. WATCH the epoch key, then read what the checks need: the epoch, an older pending input
   entry, the batch's record_ids in the dedup set, the type of each key it writes. A
   failed check raises Refused with the script's reasons and details; nothing is written.
2. MULTI, the commands, EXEC. The server runs EXEC only if the epoch is untouched since the
   WATCH: a new owner's INCR in between aborts it whole (a null reply), so a worker that
   lost its partition still cannot write. The other checks hold until EXEC because only
   the epoch's holder writes the dedup marks, acks the input and writes these keys.

Why not the script: the server's work per event (bench.instructions, docs/performance.md)
was mostly Lua's own (each argument made a Lua string, each call's arguments Redis objects
again). Round trip 1 only reads, so under appendfsync always it waits for no fsync; EXEC
is written to the AOF as one MULTI/EXEC block, which a server restarted after a crash
loads whole or not at all (as it does a script's effects).

The owner commits this way only batches of TRANSACTION_FROM_EVENTS or more on one server
(CommitForms, below): at a trickle the second round trip costs more latency than the
script's Lua costs the server. On a Redis Cluster it keeps the script: redis-py's cluster
client keeps its slot map only through its own commands, and a connection taken from one
of its nodes went on to a dead primary after a failover (an earlier branch failed
tests/test_cluster.py's failover test about one run in two)."""

import asyncio
from collections.abc import Iterable
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tagger.connect import resp
from tagger.keys import Keys
from tagger.runtime.commit import Commit, CommitScript, Refused

Arg = bytes | str | int
# Batches of this many events or more commit as MULTI/EXEC, smaller ones with the script.
# The transaction saves the server ~20k instructions an event (bench.instructions) but
# takes a second round trip for its checks: at a trickle (2-3 events a batch at 2,000/s)
# that round trip cost more than it saved (bench.latency, alternated: p50 3.9-4.1 ms with
# the transaction for every batch, 3.1-3.3 with the script; docs/performance.md).
TRANSACTION_FROM_EVENTS = 100


def _bulk(value: Arg) -> bytes:
    data = _as_bytes(value)
    return b"$%d\r\n%s\r\n" % (len(data), data)


def command(*args: Arg) -> bytes:
    """One command in RESP, as the server reads it."""
    return resp(args)


def _as_bytes(value: Arg) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return value if isinstance(value, bytes) else b"%d" % value


def commands_of(commit: Commit, dedup_key: str) -> list[bytes]:
    """The commit's commands in RESP, in the order the script runs them: the rows, the bulk
    commands, the other commands, the dedup marks."""
    out: list[bytes] = []
    if commit.row_fields:  # one format a row: a 500-event commit has ~2,000 values
        n_fields = len(commit.row_fields)
        head = b"*%d\r\n" % (len(commit.row_head) + 2 * n_fields)
        head += b"".join(map(_bulk, commit.row_head))
        row = head.replace(b"%", b"%%")  # a key may hold a %: the row is a format
        row += b"".join(
            _bulk(name).replace(b"%", b"%%") + b"$%d\r\n%s\r\n" for name in commit.row_fields
        )
        values = [v if type(v) is bytes else _as_bytes(v) for v in commit.row_values]
        sized = [x for v in values for x in (len(v), v)]
        step = 2 * n_fields
        out += [row % tuple(sized[at : at + step]) for at in range(0, len(sized), step)]
    for bulk_head, bulk_values in commit.bulk:
        out.append(command(*bulk_head, *bulk_values))
    blobs = commit.blobs
    for cmd in commit.commands:  # an int names the n-th byte string (Commit._arg)
        out.append(command(*[blobs[a - 1] if type(a) is int else a for a in cmd]))
    if commit.record_ids:
        score = _bulk(commit.dedup_score)
        marks = b"".join([score + _bulk(record_id) for record_id in commit.record_ids])
        head = b"*%d\r\n" % (2 + 2 * len(commit.record_ids)) + _bulk("ZADD") + _bulk(dedup_key)
        out.append(head + marks)
    return out


def _raise_any_error(replies: Iterable[Any]) -> None:
    """Raise the first error reply as redis-py raises it (OOM: OutOfMemoryError, ...)."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            error: Exception = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
            raise error


def checks_of(commit: Commit, k: Keys) -> list[bytes]:
    """Round trip 1's commands: WATCH the epoch, then the reads the checks need."""
    sent = [command("UNWATCH"), command("WATCH", k.epoch), command("GET", k.epoch)]
    if commit.first_id:
        sent.append(command("XPENDING", k.input_stream, k.group, "-", f"({commit.first_id}", 1))
    if commit.record_ids:
        sent.append(command("ZMSCORE", k.dedup, *commit.record_ids))
    return sent + [command("TYPE", key) for key in commit.types]


class Transaction:
    """Applies a Commit under the owner's epoch; raises Refused, changing nothing, when a
    check fails (the same contract as CommitScript)."""

    def __init__(self, client: Redis, keys: Keys) -> None:
        self.keys = keys
        self._client = client
        self._conn: AbstractConnection | None = None
        self._broken = False  # a round trip was cut: replies may be left unread

    async def apply(self, commit: Commit, epoch: int, dedup_min_score: int) -> None:
        await self.check(commit, epoch, dedup_min_score)
        await self.write(commit)

    async def check(self, commit: Commit, epoch: int, dedup_min_score: int) -> None:
        """Round trip 1: WATCH the epoch, then the checks (reads only)."""
        answered = await self._round_trip(checks_of(commit, self.keys))
        _raise_any_error(answered)  # a missing group, a server still loading, a refused command
        replies = iter(answered)
        next(replies), next(replies)  # UNWATCH, WATCH: OK
        found = next(replies)
        if found != b"%d" % epoch:
            raise Refused("fenced", [found or b""])
        if commit.first_id and (older := next(replies)):
            raise Refused("older", [older[0][0]])
        if commit.record_ids:
            scores = next(replies)
            present = [
                r.encode()
                for r, s in zip(commit.record_ids, scores, strict=True)
                if s is not None and float(s) >= dedup_min_score
            ]
            if present:
                raise Refused("duplicates", present)
        for (key, expected), actual in zip(commit.types.items(), replies, strict=True):
            if actual != expected.encode() and actual != b"none":
                raise Refused("type", [key.encode()])

    async def write(self, commit: Commit) -> None:
        """Round trip 2: MULTI, the commands, EXEC (aborted whole if the epoch moved)."""
        queued = commands_of(commit, self.keys.dedup)
        replies = await self._round_trip([command("MULTI"), *queued, command("EXEC")])
        *queued_replies, done = replies
        _raise_any_error(queued_replies)  # refused as queued (out of memory, read-only)
        if done is None:
            raise Refused("fenced", [b"(the epoch changed before EXEC)"])
        _raise_any_error([done])  # EXECABORT and the like
        _raise_any_error(
            done
        )  # failed as run: Redis applies the rest (the types checked prevent this)

    async def _round_trip(self, sent: Iterable[bytes]) -> list[Any]:
        """Send the commands at once and read every reply in one go (redis-py's
        read_response costs ~4 µs of CPU a reply, and a commit has one per event)."""
        sent = list(sent)
        conn = await self._connection()
        self._broken = True
        try:
            await conn.send_packed_command(b"".join(sent), check_health=False)
            replies = await self._read(conn, len(sent))
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RedisConnectionError(f"commit connection lost ({exc!r})") from exc
        except TimeoutError as exc:
            raise RedisTimeoutError("the server did not answer the commit in time") from exc
        self._broken = False
        return replies

    async def _read(self, conn: AbstractConnection, n: int) -> list[Any]:
        reader = hiredis.Reader(replyError=ResponseError)
        stream = conn._reader  # the connection's socket; its own parser is left unused
        assert stream is not None
        replies: list[Any] = []
        async with asyncio.timeout(conn.socket_timeout):
            while len(replies) < n:
                reply = reader.gets()
                if reply is False:
                    data = await stream.read(1 << 16)
                    if not data:
                        raise asyncio.IncompleteReadError(b"", None)
                    reader.feed(data)
                else:
                    replies.append(reply)
        return replies

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            pool = self._client.connection_pool
            self._conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        elif self._broken:  # unread replies or a half-sent command: start afresh
            await self._conn.disconnect()
            self._broken = False
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._client.connection_pool.release(self._conn)
            self._conn = None


class CommitForms:
    """Each commit in the form that suits it: the transaction for a large batch on one
    server, the script otherwise (`script_only`: always, as on a cluster)."""

    def __init__(self, client: Redis, keys: Keys, script_only: bool) -> None:
        self.script = CommitScript(client, keys)
        self.transaction = None if script_only else Transaction(client, keys)

    async def apply(self, commit: Commit, epoch: int, dedup_min_score: int) -> None:
        large = len(commit.record_ids) >= TRANSACTION_FROM_EVENTS
        form = self.transaction if large and self.transaction else self.script
        await form.apply(commit, epoch, dedup_min_score)
