"""`tagger erase --user U`: the user's data gone from Redis and files, nobody else's."""

import subprocess
from typing import Any

import orjson
import pyarrow.parquet as pq
from redis import Redis

from tagger.keys import Keys
from tagger.settings import Settings
from tests.conftest import (
    SettingsFactory,
    event,
    publish,
    streams,
    tagger_cmd,
    tagger_env,
    wait_for,
)
from tests.test_lifecycle import running_workers

T0 = 1_750_000_000_000


def parquet_rows(settings: Settings, user_id: str) -> int:
    """The user's rows in every Parquet part file (file by file: a partition directory may
    exist before its first file does)."""
    parts = (settings.data_dir / "parquet").glob("*/**/part-*.parquet")
    return sum(
        pq.read_table(p, columns=["user_id"])["user_id"].to_pylist().count(user_id) for p in parts
    )


def stream_users(client: Redis, stream: str) -> list[Any]:
    users = []
    for _id, fields in client.xrange(stream):
        raw = fields.get(b"data", b"")
        try:
            users.append(orjson.loads(raw).get("user_id"))
        except orjson.JSONDecodeError:
            users.append(raw)
    return users


def test_erase_removes_one_user_everywhere_and_nobody_else(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=60)
    keys = Keys.from_settings(settings)
    ana = [event("ana01", T0 + i * 1000) for i in range(10)] + [event("ana01", T0 + 600_000)]
    ben = [event("ben02", T0 + i * 1000) for i in range(7)]
    broken = [b'{"user_id": "ana01", oops', b'{"user_id": "ben02", oops']
    logs = settings.data_dir / "logs" / "users"
    with running_workers(settings):  # sinks running: erase pauses them, then they go on
        publish(client, settings, [*ana, *ben, *broken])
        # Everything stored: ana's two sessions and ben's one in JSONL and Parquet.
        wait_for(lambda: len(list(logs.glob("*/sessions/*.jsonl"))) == 3)
        wait_for(lambda: parquet_rows(settings, "ben02") == len(ben) + 1)  # + its start
        wait_for(lambda: parquet_rows(settings, "ana01") >= len(ana) + 3)  # + 2 starts, 1 end
        ana_output = [
            i
            for i, f in client.xrange(streams(settings).output_stream)
            if f[b"user_id"] == b"ana01"
        ]
        ana_rows = parquet_rows(settings, "ana01")
        parts = (settings.data_dir / "parquet").glob("*/**/part-*.parquet")
        ana_files = sum("ana01" in pq.read_table(p)["user_id"].to_pylist() for p in parts)
        ben_log = next(logs.glob("ben02/sessions/*.jsonl")).read_bytes()
        ana_sessions = [s.decode() for s in client.zrange(keys.user_sessions("ana01"), 0, -1)]
        assert len(ana_sessions) == 2

        erased = subprocess.run(
            tagger_cmd("erase", "--user", "ana01", "--yes", "--json"),
            env=tagger_env(settings),
            capture_output=True,
            text=True,
        )
        assert erased.returncode == 0, erased.stderr
        assert orjson.loads(erased.stdout) == {
            "user_id": "ana01",
            "sessions": 2,
            "output_entries": len(ana_output),
            "input_entries": len(ana) + 1,
            "dead_letters": 1,
            "control_requests": 0,
            "log_files": 2,
            "parquet_rows": ana_rows,
            "parquet_files_rewritten": ana_files,
        }

        assert not (logs / "ana01").exists()
        assert parquet_rows(settings, "ana01") == 0
        assert parquet_rows(settings, "ben02") == len(ben) + 1
        assert "ana01" not in stream_users(client, streams(settings).output_stream)
        assert "ana01" not in stream_users(client, streams(settings).input_stream)
        assert stream_users(client, streams(settings).dead_letter_stream) == [broken[1]]
        assert not any(client.exists(keys.session(sid)) for sid in ana_sessions)
        assert client.hget(keys.active, "ana01") is None
        assert not any(client.zscore(keys.session_index, sid) for sid in ana_sessions)
        assert next(logs.glob("ben02/sessions/*.jsonl")).read_bytes() == ben_log

        # The sinks took up their work again.
        publish(client, settings, [event("ben02", T0 + 10_000)])
        ben_file = next(logs.glob("ben02/sessions/*.jsonl"))
        wait_for(lambda: ben_file.read_bytes().count(b"\n") == len(ben) + 2)


def test_erase_refuses_an_id_that_is_not_a_user_id(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    done = subprocess.run(
        tagger_cmd("erase", "--user", "../x", "--yes"),
        env=tagger_env(settings),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "not a user id" in done.stderr
