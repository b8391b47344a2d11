"""Latency of `tagger serve`'s read routes over a registry of 100,000 sessions.

    python -m bench.http_reads [--sessions 100000] [--users 2000] [--active 20]
        [--big-events 5000] [--requests 200] [--target-ms 100] [--profile]

Uses TAGGER_REDIS_URL or an embedded Valkey (appendfsync everysec). Fills the registry
the way the tagger's commit writes it (tagger/runtime/commit.py, build_commit: each
session's hash, the start-time index, the user's index, the users index), in pipelines of
1,000 sessions: --sessions closed sessions across --users users over the last 90 days.
Then publishes real events and runs `tagger run --burst`: a few events for each of
--active users (their sessions stay active) and --big-events for one more user, whose
session (with its JSONL file) is the one /sessions/{id}, /events and /bundle read. Then
starts `tagger serve` (no worker beside it: these routes only read) and, for each route,
sends --requests requests one after another on one keep-alive connection (after 10 not
counted), timing each from send to the last byte of the answer. Prints a Markdown table:
p50, p95 and max per route in ms, each p95 against --target-ms. --profile adds, for each
route over the target, the functions its answers spent the most time in (cProfile, the
app in this process).
"""

import argparse
import cProfile
import io
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis import Redis

from tagger.connect import sync_client
from tagger.demo import user_timeline
from tagger.keys import Keys
from tagger.server import EmbeddedValkey
from tagger.settings import Settings
from tagger.times import iso_ms

TOKEN = "bench-admin-token-0123456789"
DAY_MS = 86_400_000
WARM_UP = 10
MODALITIES = ("gesture", "speech", "image", "sound")
REASONS = ("timeout", "timeout", "timeout", "explicit", "max_duration")


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]


def bench_settings(url: str, data_dir: Path) -> Settings:
    ns = f"bench:{{{uuid.uuid4().hex[:8]}}}"
    return Settings(
        redis_url=url, data_dir=data_dir, input_stream=f"{ns}:in", output_stream=f"{ns}:out",
        dead_letter_stream=f"{ns}:dead", control_stream=f"{ns}:control",
        state_prefix=f"{ns}:state", metrics_port=0,
    )  # fmt: skip


def tagger_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"TAGGER_{name.upper()}"] = str(value)
    return env | extra


def closed_session(rng: random.Random, user: str, start_ms: int) -> dict[str, Any]:
    """A closed session's registry hash, with the fields build_commit writes when it
    opens one and when it closes it."""
    sid = f"sess_{rng.getrandbits(64):016x}"
    events = rng.randint(5, 400)
    first = start_ms + rng.randint(0, 5_000)
    last = first + events * rng.randint(500, 3_000)
    reason = rng.choice(REASONS)
    end = last + 300_000 if reason == "timeout" else last
    training = rng.random() < 0.2
    fields: dict[str, Any] = {
        "session_id": sid, "user_id": user, "status": "closed", "start_ms": start_ms,
        "start_time": iso_ms(start_ms), "opened_by": "system",
        "is_training_data": "true" if training else "false",
        "session_notes": "morning routine" if rng.random() < 0.3 else "",
        "training_intent_label": rng.choice(("drink", "help", "more")) if training else "",
        "events": events, "seq": events, "last_ms": last, "first_event_ms": first,
        "last_event_ms": last, "close_reason": reason, "end_ms": end,
        "end_time": iso_ms(end), "closed_by": "carer01" if reason == "explicit" else "system",
        "closed_at": iso_ms(end + 1_000),
    }  # fmt: skip
    split = rng.randint(0, events)
    for modality, n in zip(rng.sample(MODALITIES, 2), (split, events - split), strict=True):
        if n:
            fields[f"modality:{modality}"] = n
            fields[f"source:{modality}_classifier"] = n
    return fields


def fill_registry(
    client: Redis, keys: Keys, n_sessions: int, n_users: int, now_ms: int
) -> list[tuple[str, str]]:
    """n_sessions closed sessions of n_users users, started over the 90 days before two
    hours ago; their (user_id, session_id)."""
    rng = random.Random(1)
    made: list[tuple[str, str]] = []
    latest: dict[str, int] = {}
    oldest, newest = now_ms - 90 * DAY_MS, now_ms - 2 * 3_600_000
    for chunk in range(0, n_sessions, 1000):
        pipe = client.pipeline(transaction=False)
        for n in range(chunk, min(chunk + 1000, n_sessions)):
            user = f"u{n % n_users:05d}"
            s = closed_session(rng, user, rng.randint(oldest, newest))
            pipe.hset(keys.session(s["session_id"]), mapping=s)
            pipe.zadd(keys.session_index, {s["session_id"]: s["start_ms"]})
            pipe.zadd(keys.user_sessions(user), {s["session_id"]: s["start_ms"]})
            latest[user] = max(latest.get(user, 0), s["end_ms"])
            made.append((user, s["session_id"]))
        pipe.execute()
    client.zadd(keys.users, latest, gt=True)
    return made


def publish_and_tag(client: Redis, settings: Settings, active: int, big: int, now_ms: int) -> str:
    """Real events through `tagger run --burst`: 3 for each of `active` users, and `big`
    for one more user, one a second up to now; that user's id."""
    rng = random.Random(2)
    big_user = "big00001"
    events = user_timeline(rng, big_user, 0, big, 300)
    for n, e in enumerate(events):
        e["timestamp"] = iso_ms(now_ms - (big - n) * 1_000)
    for a in range(active):
        for n, e in enumerate(user_timeline(rng, f"u{a:05d}", 0, 3, 300)):
            e["timestamp"] = iso_ms(now_ms - (3 - n) * 1_000)
            events.append(e)
    keys = Keys.from_settings(settings)
    for chunk in range(0, len(events), 1000):
        pipe = client.pipeline(transaction=False)
        for e in events[chunk : chunk + 1000]:
            pipe.xadd(keys.input_stream, {"data": orjson.dumps(e)})
        pipe.execute()
    subprocess.run(
        [sys.executable, "-m", "tagger", "run", "--burst"], env=tagger_env(settings),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    return big_user


def routes(
    big_sid: str, big: int, made: list[tuple[str, str]], users: int, now_ms: int
) -> list[tuple[str, Callable[[random.Random], tuple[str, str, dict[str, Any]]]]]:
    """(name, a request maker: method, path and the keywords of httpx's request)."""
    of_big = f"({big:,} events)"
    day = datetime.fromtimestamp((now_ms - DAY_MS) / 1000, UTC).isoformat()
    week = datetime.fromtimestamp((now_ms - 7 * DAY_MS) / 1000, UTC).isoformat()
    closed_since = {"status": "closed", "since": day}
    closed_week = {"status": "closed", "since": week}

    def one_user(r: random.Random) -> dict[str, Any]:
        return {"params": {"user_id": f"u{r.randrange(users):05d}"}}

    def validate(r: random.Random) -> dict[str, Any]:
        user, sid = r.choice(made)
        return {"json": {"user_id": user, "session_id": sid}}

    return [
        ("GET /api/v1/sessions", lambda r: ("GET", "/api/v1/sessions", {})),
        ("GET /api/v1/sessions?user_id=", lambda r: ("GET", "/api/v1/sessions", one_user(r))),
        ("GET /api/v1/sessions?status=closed&since=(24 h ago)",
         lambda r: ("GET", "/api/v1/sessions", {"params": closed_since})),
        ("GET /api/v1/sessions?status=closed&since=(7 days ago)",
         lambda r: ("GET", "/api/v1/sessions", {"params": closed_week})),
        (f"GET /api/v1/sessions/{{id}} {of_big}",
         lambda r: ("GET", f"/api/v1/sessions/{big_sid}", {})),
        (f"GET /api/v1/sessions/{{id}}/events {of_big}",
         lambda r: ("GET", f"/api/v1/sessions/{big_sid}/events", {})),
        (f"GET /api/v1/sessions/{{id}}/bundle {of_big}",
         lambda r: ("GET", f"/api/v1/sessions/{big_sid}/bundle", {})),
        ("GET /api/v1/users", lambda r: ("GET", "/api/v1/users", {})),
        ("POST /session_manager/sessions.validate",
         lambda r: ("POST", "/session_manager/sessions.validate", validate(r))),
    ]  # fmt: skip


def measure(http: httpx.Client, make: Callable[..., Any], n: int) -> tuple[list[float], str]:
    """n timings in ms (after the warm-up), and what the last answer held."""
    r = random.Random(3)
    timings = []
    for i in range(WARM_UP + n):
        method, path, options = make(r)
        started = time.perf_counter()
        answer = http.request(method, path, **options)
        content = answer.content  # the whole body
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SystemExit(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        if i >= WARM_UP:
            timings.append(elapsed)
    body = orjson.loads(content) if answer.headers["content-type"] == "application/json" else {}
    if "total" in body:
        note = f"total {body['total']:,}, {len(body['items'])} answered"
    elif "event_count" in body:
        note = f"{body['event_count']:,} events"
    elif "status" in body:
        note = body["status"]
    else:
        note = f"{len(content) / 1e6:.1f} MB"
    return timings, note


def serve(settings: Settings, port: int, tokens: Path, log: Path) -> subprocess.Popen[bytes]:
    env = tagger_env(settings, TAGGER_HTTP_PORT=str(port), TAGGER_HTTP_TOKENS_FILE=str(tokens))
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tagger", "serve"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"tagger serve did not start; see {log}")


def profile(settings: Settings, url: str, name: str, make: Callable[..., Any], n: int) -> str:
    """Where the app spends a route's time, by cProfile: the app in this process, on an
    in-memory transport, its sync work run inline (cProfile sees one thread only)."""
    import asyncio

    import anyio.to_thread

    from tagger.connect import async_client
    from tagger.http.app import create_app
    from tagger.http.auth import Tokens
    from tagger.http.deps import Services

    async def inline(func: Callable[..., Any], *args: Any, **_options: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = inline  # type: ignore[assignment]  # this process only
    services = Services(
        settings, sync_client(url), async_client(url), Tokens.from_settings(settings),
        Keys.every_partition(settings),
    )  # fmt: skip
    app = create_app(services)
    profiler = cProfile.Profile()

    async def run() -> None:
        r = random.Random(3)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://x", headers=headers
        ) as h:
            for _ in range(n):
                method, path, options = make(r)
                profiler.enable()
                answer = await h.request(method, path, **options)
                profiler.disable()
                assert answer.status_code == 200, answer.text[:300]

    asyncio.run(run())
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(r"tagger|exporters|redis|pydantic|json|zip", 20)
    return f"\n### {name}: {n} requests (cProfile, cumulative)\n{text.getvalue()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--active", type=int, default=20, help="users with an active session")
    parser.add_argument("--big-events", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per route")
    parser.add_argument("--target-ms", type=float, default=100.0, help="p95 target")
    parser.add_argument("--profile", action="store_true", help="profile routes over target")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tagger-http-reads-"))
    server = None
    url = os.environ.get("TAGGER_REDIS_URL")
    if not url:
        server = EmbeddedValkey(workdir, appendfsync="everysec")
        url = server.start()
    settings = bench_settings(url, workdir / "data")
    (workdir / "tokens").write_text(f"admin {TOKEN} bench\n")
    (workdir / "tokens").chmod(0o600)
    settings = settings.model_copy(update={"http_tokens_file": workdir / "tokens"})
    client = sync_client(url)
    keys = Keys.from_settings(settings)
    served = None
    try:
        now_ms = int(time.time() * 1000)
        started = time.perf_counter()
        made = fill_registry(client, keys, args.sessions, args.users, now_ms)
        filled = time.perf_counter() - started
        started = time.perf_counter()
        big_user = publish_and_tag(client, settings, args.active, args.big_events, now_ms)
        tagged = time.perf_counter() - started
        (big_sid,) = client.zrange(keys.user_sessions(big_user), 0, -1)
        port = _free_port()
        served = serve(settings, port, workdir / "tokens", workdir / "serve.log")
        print(
            f"registry: {args.sessions:,} closed sessions of {args.users:,} users written in "
            f"{filled:.1f} s; {args.active} active sessions and one of {args.big_events:,} "
            f"events by `tagger run --burst` in {tagged:.1f} s; {args.requests} requests per "
            f"route, one at a time, after {WARM_UP} not counted; load average "
            f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n"
        )
        print(f"| route | answer | p50 ms | p95 ms | max ms | p95 <= {args.target_ms:g} ms |")
        print("|---|---|---:|---:|---:|---|")
        missed = []
        headers = {"Authorization": f"Bearer {TOKEN}"}
        table = routes(big_sid.decode(), args.big_events, made, args.users, now_ms)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as h:
            for name, make in table:
                timings, note = measure(h, make, args.requests)
                timings.sort()
                p50, p95 = percentile(timings, 0.5), percentile(timings, 0.95)
                over = p95 - args.target_ms
                verdict = (
                    "yes" if over <= 0 else f"**no: +{over:.0f} ms ({p95 / args.target_ms:.1f}x)**"
                )
                if over > 0:
                    missed.append((name, make))
                print(
                    f"| {name} | {note} | {p50:.1f} | {p95:.1f} | {timings[-1]:.1f} | {verdict} |"
                )
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
        if missed:
            print(f"over the target: {', '.join(name for name, _ in missed)}")
        if args.profile:
            for name, make in missed:
                print(profile(settings, url, name, make, min(args.requests, 50)))
    finally:
        if served is not None:
            served.terminate()
            served.wait(timeout=15)
        client.close()
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


if __name__ == "__main__":
    main()
