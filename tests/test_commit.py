"""The atomic commit against a real server, in both forms: MULTI/EXEC (one server) and the
generic script (a cluster; also runs on one server). Each check refuses the whole batch
with its reason; both forms write the same keys, the same way."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tagger.connect import async_client
from tagger.keys import Keys
from tagger.runtime import Commit, CommitForms, CommitScript, Refused, Transaction
from tagger.runtime.transaction import TRANSACTION_FROM_EVENTS, command, commands_of
from tagger.settings import Settings
from tests.conftest import SettingsFactory

EPOCH = 7
FORMS = ["transaction", "script"]


def a_commit(keys: Keys, n: int = 3, first_id: str = "", tag: str = "") -> Commit:
    """Rows, bulk commands, commands naming byte strings, dedup marks: every part."""
    c = Commit(first_id=first_id, record_ids=[f"rec-{tag}{i}" for i in range(n)])
    c.types = {keys.output_stream: "stream", keys.active: "hash", keys.dedup: "zset"}
    c.row_head, c.row_fields = ["XADD", keys.output_stream, "*"], ["data", "user_id"]
    for i in range(n):
        c.row_values += [b'{"n": %d}' % i, f"user{i}"]
    c.add("HSET", keys.session("sess_1"), "status", "active", "state", b"\x00\xffbytes")
    c.add("ZADD", keys.users, "GT", 5, "user0")
    c.add_bulk("HSET", keys.active, values=[x for i in range(n) for x in (f"user{i}", b"\x01s")])
    c.add_bulk("HDEL", keys.active, values=["gone"])
    c.dedup_score = 1000
    return c


def run(form: str, settings: Settings, act: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `act(commit form)` with a fresh async client of the settings' server."""
    assert settings.redis_url

    async def main() -> Any:
        client = async_client(settings.redis_url or "")
        keys = Keys.from_settings(settings)
        committer = (
            Transaction(client, keys) if form == "transaction" else CommitScript(client, keys)
        )
        try:
            return await act(committer)
        finally:
            if isinstance(committer, Transaction):
                await committer.close()
            await client.aclose()

    return asyncio.run(main())


def apply(
    form: str, settings: Settings, commit: Commit, epoch: int = EPOCH, min_score: int = 0
) -> Any:
    return run(form, settings, lambda c: c.apply(commit, epoch, min_score))


def written(client: "Redis[bytes]", keys: Keys) -> dict[str, Any]:
    """What a commit leaves, stream ids left out (they are the server's clock)."""
    return {
        "output": [f for _id, f in client.xrange(keys.output_stream)],
        "active": client.hgetall(keys.active),
        "session": client.hgetall(keys.session("sess_1")),
        "users": client.zrange(keys.users, 0, -1, withscores=True),
        "dedup": client.zrange(keys.dedup, 0, -1, withscores=True),
    }


@pytest.fixture
def forms(server_url: str) -> list[str]:
    # redis-py's cluster client lends no connection of a node: the script there.
    return ["script"] if Settings(redis_url=server_url).cluster else FORMS


@pytest.fixture(params=FORMS)
def form(request: pytest.FixtureRequest, forms: list[str]) -> str:
    if request.param not in forms:
        pytest.skip("the cluster commits with the script")
    return str(request.param)


@pytest.fixture
def ours(client: "Redis[bytes]", make_settings: SettingsFactory) -> tuple[Settings, Keys]:
    """Fresh names, the partition's epoch EPOCH (the commits' own)."""
    settings = make_settings()
    keys = Keys.from_settings(settings)
    client.set(keys.epoch, EPOCH)
    return settings, keys


def test_both_forms_write_the_same(
    client: "Redis[bytes]", make_settings: SettingsFactory, forms: list[str]
) -> None:
    seen = []
    for form in forms:
        settings = make_settings()
        keys = Keys.from_settings(settings)
        client.set(keys.epoch, EPOCH)
        client.hset(keys.active, "gone", b"old")
        apply(form, settings, a_commit(keys))
        seen.append(written(client, keys))
    assert seen[0]["output"] == [
        {b"data": b'{"n": %d}' % i, b"user_id": b"user%d" % i} for i in range(3)
    ]
    assert seen[0]["active"] == {b"user0": b"\x01s", b"user1": b"\x01s", b"user2": b"\x01s"}
    assert seen[0]["session"] == {b"status": b"active", b"state": b"\x00\xffbytes"}
    assert seen[0]["dedup"] == [(b"rec-0", 1000.0), (b"rec-1", 1000.0), (b"rec-2", 1000.0)]
    assert all(s == seen[0] for s in seen)


def test_a_stale_epoch_is_refused_and_nothing_is_written(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours
    client.set(keys.epoch, EPOCH + 1)  # a new owner took the partition
    with pytest.raises(Refused) as refused:
        apply(form, settings, a_commit(keys))
    assert (refused.value.why, refused.value.detail) == ("fenced", [b"%d" % (EPOCH + 1)])
    assert client.exists(keys.output_stream, keys.active, keys.dedup) == 0


@pytest.mark.parametrize("form", ["transaction"], indirect=True)
def test_an_epoch_raised_between_the_checks_and_exec_aborts_the_whole_transaction(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours
    commit = a_commit(keys)

    async def takeover_between(tx: Transaction) -> None:
        await tx.check(commit, EPOCH, 0)  # passes: the epoch is ours, and now WATCHed
        client.incr(keys.epoch)  # a new owner takes over (another connection)
        await tx.write(commit)

    with pytest.raises(Refused) as refused:
        run("transaction", settings, takeover_between)
    assert refused.value.why == "fenced"
    assert client.exists(keys.output_stream, keys.active, keys.dedup, keys.users) == 0


def test_duplicates_are_refused_with_their_ids_until_the_window_passes(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours
    apply(form, settings, a_commit(keys, n=2))
    again = a_commit(keys, n=3)  # rec-0 and rec-1 were tagged, rec-2 is new
    with pytest.raises(Refused) as refused:
        apply(form, settings, again, min_score=1000)  # the marks (score 1000) still count
    assert (refused.value.why, refused.value.detail) == ("duplicates", [b"rec-0", b"rec-1"])
    assert client.xlen(keys.output_stream) == 2
    apply(form, settings, again, min_score=1001)  # past the window: no longer duplicates
    assert client.xlen(keys.output_stream) == 5


def test_an_older_entry_pending_elsewhere_refuses_the_batch(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours
    older = client.xadd(keys.input_stream, {"data": b"{}"})
    client.xgroup_create(keys.input_stream, keys.group, id="0")
    client.xreadgroup(keys.group, "zombie", {keys.input_stream: ">"})  # read after a takeover
    newer = client.xadd(keys.input_stream, {"data": b"{}"})
    with pytest.raises(Refused) as refused:
        apply(form, settings, a_commit(keys, first_id=newer.decode()))
    assert (refused.value.why, refused.value.detail) == ("older", [older])
    assert client.exists(keys.output_stream) == 0
    apply(form, settings, a_commit(keys, first_id=older.decode()))  # the oldest goes first
    assert client.xlen(keys.output_stream) == 3


def test_a_key_of_a_foreign_type_refuses_the_batch(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours
    client.set(keys.active, "not a hash")
    with pytest.raises(Refused) as refused:
        apply(form, settings, a_commit(keys))
    assert (refused.value.why, refused.value.detail) == ("type", [keys.active.encode()])
    assert client.exists(keys.output_stream, keys.dedup) == 0


@pytest.mark.parametrize("form", ["transaction"], indirect=True)
def test_a_transaction_whose_connection_was_killed_commits_once_on_a_new_one(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours

    async def killed_between(tx: Transaction) -> int:
        await tx.apply(a_commit(keys, n=1, tag="a"), EPOCH, 0)
        client.client_kill_filter(_id=await _client_id(tx))
        failures = 0
        for _ in range(2):  # the first may meet the closed socket: a ConnectionError
            try:
                await tx.apply(a_commit(keys, n=1, tag="b"), EPOCH, 0)
                break
            except RedisConnectionError:
                failures += 1
        return failures

    assert run("transaction", settings, killed_between) <= 1
    assert [f[b"data"] for _i, f in client.xrange(keys.output_stream)] == [b'{"n": 0}'] * 2
    assert client.zcard(keys.dedup) == 2


async def _client_id(tx: Transaction) -> int:
    """The server's id of the transaction's connection (CLIENT ID, on it)."""
    (found,) = await tx._round_trip([command("CLIENT", "ID")])
    return int(found)


def test_an_error_of_a_check_is_raised_and_nothing_is_written(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours
    entry_id = client.xadd(keys.input_stream, {"data": b"{}"})  # but no consumer group
    with pytest.raises(ResponseError, match="NOGROUP"):
        apply(form, settings, a_commit(keys, first_id=entry_id.decode()))
    assert client.exists(keys.output_stream, keys.active, keys.dedup) == 0


@pytest.mark.parametrize("form", ["transaction"], indirect=True)
def test_large_batches_commit_as_a_transaction_and_small_ones_with_the_script(
    client: "Redis[bytes]", ours: tuple[Settings, Keys], form: str
) -> None:
    settings, keys = ours

    def calls() -> tuple[int, int]:  # EXEC and EVALSHA calls the server has answered
        stats: Any = client.info("commandstats")
        return stats.get("cmdstat_exec", {}).get("calls", 0), stats.get("cmdstat_evalsha", {}).get(
            "calls", 0
        )

    async def commit(n: int, tag: str) -> tuple[int, int]:
        redis = async_client(settings.redis_url or "")
        try:
            before = calls()
            await CommitForms(redis, keys, script_only=False).apply(
                a_commit(keys, n=n, tag=tag), EPOCH, 0
            )
            after = calls()
            return after[0] - before[0], after[1] - before[1]
        finally:
            await redis.aclose()

    assert asyncio.run(commit(TRANSACTION_FROM_EVENTS, "large")) == (1, 0)
    execs, evalshas = asyncio.run(commit(TRANSACTION_FROM_EVENTS - 1, "small"))
    assert execs == 0 and evalshas >= 1  # two when the script was not yet loaded (NOSCRIPT)
    assert client.xlen(keys.output_stream) == 2 * TRANSACTION_FROM_EVENTS - 1


def test_a_commits_rows_are_the_commands_they_stand_for() -> None:
    # Pure: the rows are packed from one format, which a "%" in a name must not upset.
    c = Commit(record_ids=["r1"], dedup_score=5)
    c.row_head, c.row_fields = ["XADD", "out:100%", "*"], ["data", "k%d"]
    c.row_values = [b"%s\x00", "v1", b"", "v2"]
    c.add("HSET", "h", "f", b"blob")
    c.add_bulk("XACK", "in", "g", values=["1-0", "2-0"])
    assert commands_of(c, "dedup") == [
        command("XADD", "out:100%", "*", "data", b"%s\x00", "k%d", "v1"),
        command("XADD", "out:100%", "*", "data", b"", "k%d", "v2"),
        command("XACK", "in", "g", "1-0", "2-0"),
        command("HSET", "h", "f", b"blob"),
        command("ZADD", "dedup", 5, "r1"),
    ]
