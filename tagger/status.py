"""`tagger status`: a live view of a running deployment for a person at a terminal.

Everything comes from the server (stream and group info, the session registry, the last
dead letters), so the view covers every worker, wherever they run."""

import asyncio
import contextlib
import os
import sys
import termios
import time
import tty
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from tagger.errors import GroupMissing
from tagger.health import consumer_groups, group_backlog
from tagger.keys import Keys
from tagger.times import iso_ms

LAST_ERRORS = 5


@dataclass
class Snapshot:
    at: float  # time.monotonic() when read
    read: int  # entries the tagger's group has read from the input stream, ever
    written: int  # entries ever added to the output stream
    active_sessions: int
    lag: dict[str, tuple[int, int] | None]  # group -> (undelivered, pending); None: missing
    lengths: dict[str, int]
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # time, reason, detail


async def snapshot(
    client: Redis, partitions: Sequence[Keys], sink_names: Sequence[str]
) -> Snapshot:
    """The whole deployment: every partition, summed where a sum means something."""
    lag: dict[str, tuple[int, int] | None] = {}
    for stream, group in consumer_groups(partitions, True, sink_names):
        try:
            lag[f"{group} on {stream}"] = await group_backlog(client, stream, group)
        except GroupMissing:
            lag[f"{group} on {stream}"] = None
    lengths: dict[str, int] = {}
    last: list[Any] = []
    for keys in partitions:
        for stream in (keys.input_stream, keys.output_stream, keys.dead_letter_stream):
            lengths[stream] = await client.xlen(stream)
        newest: Any = await client.xrevrange(keys.dead_letter_stream, count=LAST_ERRORS)
        last += newest
    errors = []
    for entry_id, fields in sorted(last, key=lambda e: _ms(e[0]), reverse=True)[:LAST_ERRORS]:
        when = iso_ms(_ms(entry_id))
        errors.append((when, fields[b"reason"].decode(), fields[b"detail"].decode()))
    return Snapshot(
        at=time.monotonic(),
        read=sum([await _entries_read(client, k) for k in partitions]),
        written=sum([await _entries_added(client, k.output_stream) for k in partitions]),
        active_sessions=sum([await client.hlen(k.active) for k in partitions]),
        lag=lag,
        lengths=lengths,
        errors=errors,
    )


def _ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


async def _entries_read(client: Redis, keys: Keys) -> int:
    with contextlib.suppress(Exception):
        for group in await client.xinfo_groups(keys.input_stream):
            if group["name"].decode() == keys.group:
                return int(group.get("entries-read") or 0)
    return 0


async def _entries_added(client: Redis, stream: str) -> int:
    with contextlib.suppress(Exception):
        info = await client.xinfo_stream(stream)
        return int(info.get("entries-added", info["length"]))
    return 0


def render(now: Snapshot, before: Snapshot | None, url: str) -> Group:
    def rate(count_now: int, count_before: int) -> str:
        if before is None or now.at <= before.at:
            return "-"
        return f"{(count_now - count_before) / (now.at - before.at):,.0f}/s"

    top = Table.grid(padding=(0, 3))
    top.add_row("input read", rate(now.read, before.read if before else 0))
    top.add_row("output written", rate(now.written, before.written if before else 0))
    top.add_row("active sessions", f"{now.active_sessions:,}")
    for stream, length in now.lengths.items():
        top.add_row(f"length of {stream}", f"{length:,}")
    lag = Table("consumer group", "undelivered", "pending", title="lag", title_justify="left")
    for name, backlog in now.lag.items():
        if backlog is None:
            lag.add_row(name, "[red]missing[/red]", "-")
        else:
            lag.add_row(name, f"{backlog[0]:,}", f"{backlog[1]:,}")
    errors = Table("time", "reason", "detail", title="last dead letters", title_justify="left")
    for when, reason, detail in now.errors:
        errors.add_row(when, f"[yellow]{reason}[/yellow]", detail)
    title = f"session tagger on {url} (q or Ctrl-C quits)"
    return Group(Panel(top, title=title, title_align="left"), lag, errors)


@contextlib.contextmanager
def keys_without_enter() -> Iterator[bool]:
    """Single key presses reach stdin at once (cbreak) while the view runs; True if so."""
    if not sys.stdin.isatty():
        yield False
        return
    saved = termios.tcgetattr(sys.stdin)
    tty.setcbreak(sys.stdin)
    try:
        yield True
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


async def live_view(
    client: Redis,
    partitions: Sequence[Keys],
    sink_names: Sequence[str],
    url: str,
    interval_s: float,
) -> None:
    """Redraw every interval until q is pressed (Ctrl-C raises KeyboardInterrupt)."""
    quit_pressed = asyncio.Event()
    loop = asyncio.get_running_loop()
    with keys_without_enter() as keyboard, Live(auto_refresh=False, screen=False) as live:
        if keyboard:
            loop.add_reader(sys.stdin, _on_key, quit_pressed)
        before: Snapshot | None = None
        while not quit_pressed.is_set():
            now = await snapshot(client, partitions, sink_names)
            live.update(render(now, before, url), refresh=True)
            before = now
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(quit_pressed.wait(), interval_s)
        if keyboard:
            loop.remove_reader(sys.stdin)


def _on_key(quit_pressed: asyncio.Event) -> None:
    # os.read, not sys.stdin.read: the text layer would buffer keys the loop never sees.
    if b"q" in os.read(sys.stdin.fileno(), 64).lower():
        quit_pressed.set()
