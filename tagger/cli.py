"""`tagger` command line: run, demo, publish, health (sessions and files live beside it)."""

import asyncio
import logging
import random
import sys
import time
from pathlib import Path

import click
from redis.asyncio import Redis as AsyncRedis
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from exporters import SINK_NAMES
from tagger.acl import acl_rules
from tagger.cli_common import console, fail, load_settings, progress_bar, running_server_url
from tagger.cli_files import (
    compact_command,
    dataset,
    erase_command,
    export_command,
    import_command,
    replay,
)
from tagger.cli_sessions import sessions
from tagger.connect import async_client, sync_client
from tagger.demo import workload
from tagger.errors import SERVER_ERRORS, TaggerError, server_advice
from tagger.health import Check, readiness
from tagger.keys import Keys
from tagger.logs import configure_logging
from tagger.publish import jsonl_lines, publish_raw, router
from tagger.rules import Counts
from tagger.runtime.sinks_process import SinksProcess
from tagger.server import redact, redis_url
from tagger.settings import Settings
from tagger.status import live_view, render, snapshot
from tagger.worker import Worker


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log every batch (DEBUG).")
def main(verbose: bool) -> None:
    """A3CP session tagger: assigns sessions to A3CP messages on Redis Streams."""
    configure_logging("text", verbose)  # until the settings say otherwise (load_settings)


main.add_command(sessions)
main.add_command(export_command)
main.add_command(import_command)
main.add_command(replay)
main.add_command(dataset)
main.add_command(compact_command)
main.add_command(erase_command)


@main.command()
@click.option(
    "--burst", is_flag=True, help="Exit 0 once the input is drained and written to files."
)
@click.option("--no-sinks", is_flag=True, help="Tag only; write no files.")
@click.option("--sinks-only", is_flag=True, help="Write files from the tagged stream; no tagging.")
@click.pass_context
def run(ctx: click.Context, burst: bool, no_sinks: bool, sinks_only: bool) -> None:
    """Tag the input stream and write the logs until stopped (SIGTERM/SIGINT finish the
    batch in hand). The file sinks run in a process of their own beside the tagging."""
    if no_sinks and sinks_only:
        fail("--no-sinks and --sinks-only exclude each other; pick one", code=2)
    settings = load_settings()
    try:
        with redis_url(settings) as url:
            started = time.perf_counter()
            sinks = None
            if not (no_sinks or sinks_only):
                verbose = bool(ctx.find_root().params.get("verbose"))
                sinks = SinksProcess(url, verbose, settings.sinks_nice)
            worker = Worker(
                settings, url, burst=burst, tag=not sinks_only,
                sinks=sinks_only, sinks_process=sinks,
            )  # fmt: skip
            try:
                counts = asyncio.run(worker.run())
            finally:
                code = sinks.stop() if sinks is not None else 0
            if code != 0:
                fail(f"the file sinks process exited with code {code} (see its error above)")
            console.print(summary_table(counts, time.perf_counter() - started))
    except TaggerError as exc:
        fail(str(exc))
    except SERVER_ERRORS as exc:  # at start: once running, the worker rides out a lost server
        fail(f"cannot use the server {redact(url)} ({exc}); {server_advice(exc)}")


@main.command()
def serve() -> None:
    """The HTTP service: upstream's /session_manager routes, /api/v1 and login, on
    TAGGER_HTTP_HOST:TAGGER_HTTP_PORT (no worker needed in this process)."""
    from tagger.http import serve as serve_http

    settings = load_settings()
    try:
        with redis_url(settings) as url:
            serve_http(settings, url)
    except TaggerError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(
            f"cannot listen on {settings.http_host}:{settings.http_port} ({exc.strerror}); "
            "set TAGGER_HTTP_PORT to a free port"
        )


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def publish(file: Path) -> None:
    """Publish one A3CPMessage per line of FILE (JSONL) to the input stream (of each
    user's partition, with TAGGER_PARTITIONS > 1)."""
    settings = load_settings()
    try:
        with redis_url(settings) as url, progress_bar() as progress:
            publishing = progress.add_task("publishing", total=None)
            client = sync_client(url)
            sent = 0
            for sent in publish_raw(client, router(settings), jsonl_lines(file)):
                progress.update(publishing, completed=sent)
    except (TaggerError, *SERVER_ERRORS) as exc:
        fail(f"{exc}. Nothing after the last full chunk of 500 lines was published.")
    where = settings.input_stream + (
        f" ({settings.partitions} partitions, by user)" if settings.hash_tagged else ""
    )
    console.print(f"published {sent} entries to [bold]{where}[/bold]")


@main.command()
@click.option("--no-sinks", is_flag=True, help="Check a worker run with --no-sinks.")
@click.option("--sinks-only", is_flag=True, help="Check a worker run with --sinks-only.")
def health(no_sinks: bool, sinks_only: bool) -> None:
    """Exit 0 when the server answers, the consumer groups exist and the file sinks keep
    up (the checks of a worker's /ready), else 1 with what failed and what to do."""
    settings = load_settings()
    url = running_server_url(settings)
    sink_names = [] if no_sinks else list(SINK_NAMES)
    checks = asyncio.run(_readiness(url, settings, not sinks_only, sink_names))
    failed = [c for c in checks if not c.ok]
    for check in failed:
        Console(stderr=True).print(
            f"[red]error:[/red] {check.name}: {check.detail}", highlight=False, soft_wrap=True
        )
    if failed:
        sys.exit(1)
    console.print(f"ok: {redact(url)}: " + "; ".join(f"{c.name} {c.detail}" for c in checks))


async def _readiness(
    url: str, settings: Settings, tagging: bool, sink_names: list[str]
) -> list[Check]:
    client: AsyncRedis = async_client(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return await readiness(
            client,
            Keys.every_partition(settings),
            tagging=tagging,
            sink_names=sink_names,
            max_sink_lag=settings.ready_max_sink_lag,
            max_input_lag=settings.ready_max_input_lag,
        )
    finally:
        await client.aclose()


@main.command()
@click.option("--user", "acl_user", default="tagger", show_default=True)
def acl(acl_user: str) -> None:
    """Print the ACL SETUSER command for a least-privilege tagger user (these settings'
    streams and keys, the commands the service uses); replace <password>."""
    rules = " ".join(acl_rules(load_settings()))
    click.echo(f"ACL SETUSER {acl_user} on ><password> {rules}")


@main.command()
@click.option("--once", is_flag=True, help="Print one view and exit (scripts, logs).")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between redraws.")
def status(once: bool, interval: float) -> None:
    """Live view of throughput, lag, active sessions and the last dead letters; q or
    Ctrl-C quits."""
    settings = load_settings()
    url = running_server_url(settings)
    keys = Keys.every_partition(settings)

    async def watch() -> None:
        client: AsyncRedis = async_client(url, socket_timeout=5)
        try:
            if once:  # two reads an interval apart, for the rates
                before = await snapshot(client, keys, SINK_NAMES)
                await asyncio.sleep(interval)
                now = await snapshot(client, keys, SINK_NAMES)
                console.print(render(now, before, redact(url)))
            else:
                await live_view(client, keys, SINK_NAMES, redact(url), interval)
        finally:
            await client.aclose()

    try:
        asyncio.run(watch())
    except KeyboardInterrupt:
        pass
    except SERVER_ERRORS as exc:
        fail(f"server {redact(url)} does not answer ({exc}); {server_advice(exc)}")


@main.command()
@click.option("--users", default=8, show_default=True, help="How many users.")
@click.option("--events-per-user", default=2500, show_default=True)
@click.option(
    "--seed", type=int, help="Same seed, same workload (ids too: a rerun is all duplicates)."
)
def demo(users: int, events_per_user: int, seed: int | None) -> None:
    """Publish a synthetic workload, tag it with the embedded server, print what happened."""
    settings = load_settings()
    for name in ("tagger", "faststream"):
        logging.getLogger(name).setLevel(logging.WARNING)
    seed = random.randrange(2**31) if seed is None else seed
    console.print(f"workload seed {seed}: {users} users, {events_per_user} events each")
    now_ms = int(time.time() * 1000)
    payloads, user_ids = workload(seed, users, events_per_user, settings.session_timeout_s, now_ms)
    try:
        with redis_url(settings) as url, progress_bar() as progress:
            publishing = progress.add_task("publishing", total=len(payloads))
            client = sync_client(url)
            for sent in publish_raw(client, router(settings), payloads):
                progress.update(publishing, completed=sent)
            tagging = progress.add_task("tagging", total=len(payloads))
            started = time.perf_counter()
            counts = asyncio.run(
                _run_with_progress(Worker(settings, url, burst=True), progress, tagging)
            )
            elapsed_s = time.perf_counter() - started
    except TaggerError as exc:
        fail(str(exc))
    console.print(summary_table(counts, elapsed_s, users=len(user_ids)))
    console.print(_app_pointer(settings), soft_wrap=True)


def _app_pointer(settings: Settings) -> str:
    """Where to see the demo's sessions: the app of `tagger serve`, with its login link."""
    from tagger.http.auth import AuthConfigError, Tokens

    base = f"http://{settings.http_host}:{settings.http_port}"
    try:
        tokens = Tokens.from_settings(settings)
    except AuthConfigError:
        return f"See the sessions in the app: run `tagger serve`, then open {base}/login."
    link = f"{base}/login?token={tokens.any_token()}" if tokens.made else f"{base}/login"
    return f"See the sessions in the app: run `tagger serve` (same directory), then open {link}"


async def _run_with_progress(worker: Worker, progress: Progress, task: TaskID) -> Counts:
    async def follow() -> None:
        while True:
            c = worker.counts
            progress.update(task, completed=c.tagged + c.dead + c.duplicates + c.already_acked)
            await asyncio.sleep(0.1)

    follower = asyncio.create_task(follow())
    try:
        return await worker.run()
    finally:
        follower.cancel()
        c = worker.counts
        progress.update(task, completed=c.tagged + c.dead + c.duplicates + c.already_acked)


def summary_table(counts: Counts, elapsed_s: float, users: int | None = None) -> Table:
    """What a run did, for a person at a terminal."""
    table = Table(title="session tagger", show_header=False)
    if users is not None:
        table.add_row("users", str(users))
    handled = counts.tagged + counts.duplicates + counts.dead
    table.add_row("events tagged", str(counts.tagged))
    table.add_row("duplicates dropped", str(counts.duplicates))
    table.add_row("sessions opened", str(counts.opened))
    table.add_row("sessions rolled over", f"{counts.closed} (timeout or max duration)")
    table.add_row("late events", str(counts.late))
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(counts.dead_by_reason.items()))
    table.add_row("dead letters", f"{counts.dead}" + (f" ({reasons})" if reasons else ""))
    table.add_row("elapsed", f"{elapsed_s:.2f} s")
    table.add_row("throughput", f"{handled / elapsed_s:,.0f} entries/s" if elapsed_s else "-")
    return table
