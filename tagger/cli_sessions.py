"""`tagger sessions ...`: list, show, validate, start and end sessions."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from redis import Redis
from rich import box
from rich.table import Table
from rich.text import Text

from schemas.api import SessionSummary
from tagger.cli_common import console, fail, load_settings
from tagger.connect import sync_client
from tagger.control import request
from tagger.errors import SERVER_ERRORS, TaggerError, server_advice
from tagger.keys import Keys
from tagger.registry import get_session, list_sessions, validate
from tagger.server import redis_url
from tagger.times import duration_text


@contextmanager
def _registry() -> Iterator[tuple[Redis, list[Keys]]]:
    settings = load_settings()
    try:
        with redis_url(settings) as url, sync_client(url) as client:
            yield client, Keys.every_partition(settings)
    except TaggerError as exc:
        fail(str(exc))
    except SERVER_ERRORS as exc:
        fail(f"cannot use the server ({exc}); {server_advice(exc)}")


@click.group()
def sessions() -> None:
    """Sessions in the registry, and explicit start and end."""


@sessions.command("list")
@click.option("--user", help="Only this user's sessions.")
@click.option("--status", type=click.Choice(["active", "closed"]))
@click.option("--since", help="Only sessions that started at or after this ISO time.")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def list_command(
    user: str | None,
    status: str | None,
    since: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Sessions, newest first (times in UTC)."""
    since_ms = _parse_ms(since) if since else None
    with _registry() as (client, keys):
        found = list_sessions(
            client, keys, user_id=user, status=status, since_ms=since_ms, limit=limit, offset=offset
        )
    if as_json:
        click.echo(orjson.dumps([_as_json(s) for s in found], option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no sessions match" if user or status or since or offset else "no sessions yet")
        return
    console.print(session_table([SessionSummary.from_registry(s) for s in found]))


@sessions.command()
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def show(session_id: str, as_json: bool) -> None:
    """One session: who, when, how long, how it ended (times in UTC)."""
    with _registry() as (client, keys):
        session = get_session(client, keys, session_id)
    if session is None:
        fail(f"unknown session {session_id}; `tagger sessions list` shows the known ones")
    if as_json:
        click.echo(orjson.dumps(_as_json(session), option=orjson.OPT_INDENT_2).decode())
        return
    console.print(session_view(SessionSummary.from_registry(session)))


def session_table(summaries: list[SessionSummary]) -> Table:
    """The list: one line a session, short headers, so that 80 columns hold it whole."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("session", no_wrap=True)  # an id must stay whole to be copied
    table.add_column("user", overflow="fold", min_width=len("user"))
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("duration", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("ended", min_width=len("ended"))
    for s in summaries:
        table.add_row(
            s.session_id,
            Text(s.user_id),
            _when(s.start_time, seconds=False),
            duration_text(s.duration_s),
            str(s.event_count),
            Text(_reason(s) if s.status == "closed" else "active"),
        )
    return table


def session_view(s: SessionSummary) -> Table:
    """One session as key and value, from the same summary as the API's."""
    table = Table(
        box=None,
        show_header=False,
        pad_edge=False,
        padding=(0, 2, 0, 0),
        title=f"session {s.session_id}",
        title_justify="left",
        title_style="bold",
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    active = s.status == "active"
    rows = [
        ("user", s.user_id),
        ("status", s.status),
        ("started", _when(s.start_time)),
        ("ended", "not yet (active)" if active else _when(s.end_time)),
        ("last event", _when(s.last_activity) if s.last_activity else _no_event(active)),
        ("duration", duration_text(s.duration_s)),
        ("events", str(s.event_count)),
        ("late events", str(s.late_events)),
    ]
    if not active:
        rows.append(("how it ended", f"{_reason(s)}, by {s.closed_by or 'unknown'}"))
    rows += [
        ("opened by", s.opened_by or "-"),
        ("training", _training(s)),
        ("notes", s.session_notes or "-"),
        ("by modality", _counts(s.by_modality)),
        ("by source", _counts(s.by_source)),
    ]
    for name, value in rows:
        table.add_row(name, Text(value))  # Text: a note's "[...]" is not markup
    return table


def _as_json(session: dict[str, Any]) -> dict[str, Any]:
    """The API's SessionSummary, then the registry fields it does not name (`events`,
    `modality`, `start_ms`...), which scripts written for the earlier output read."""
    summary = SessionSummary.from_registry(session).model_dump(mode="json")
    return summary | {k: v for k, v in session.items() if k not in summary}


def _when(moment: datetime | None, seconds: bool = True) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M")


def _no_event(active: bool) -> str:
    return "none yet" if active else "none"


def _reason(s: SessionSummary) -> str:
    return (s.close_reason or "unknown").replace("_", " ")


def _training(s: SessionSummary) -> str:
    if not s.is_training_data:
        return "no"
    return f"yes, intent label {s.training_intent_label}" if s.training_intent_label else "yes"


def _counts(counts: dict[str, int]) -> str:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} {n}" for name, n in ranked) or "-"


@sessions.command("validate")
@click.option("--user", required=True)
@click.argument("session_id")
def validate_command(user: str, session_id: str) -> None:
    """Print active, closed or invalid for (user, session)."""
    with _registry() as (client, keys):
        click.echo(validate(client, keys, user, session_id))


WAIT_OPTION = click.option(
    "--wait",
    default=10.0,
    show_default=True,
    help="Seconds to wait for a running tagger's reply.",
)


@sessions.command()
@click.option("--user", required=True)
@click.option("--performer", default="cli", show_default=True, help="Who asks (performer_id).")
@click.option("--notes", help="session_notes")
@click.option("--training-label", help="Marks a training session with this intent label.")
@click.option("--supersede", is_flag=True, help="End the active session and start a new one.")
@WAIT_OPTION
def start(
    user: str,
    performer: str,
    notes: str | None,
    training_label: str | None,
    supersede: bool,
    wait: float,
) -> None:
    """Start a session for a user (returns the active one if there is one)."""
    _ask(
        "start",
        user,
        wait,
        performer_id=performer,
        session_notes=notes,
        is_training_data=bool(training_label),
        training_intent_label=training_label,
        supersede=supersede,
    )


@sessions.command()
@click.argument("session_id")
@click.option("--user", required=True)
@click.option("--performer", default="cli", show_default=True, help="Who asks (performer_id).")
@WAIT_OPTION
def end(session_id: str, user: str, performer: str, wait: float) -> None:
    """End a user's active session."""
    _ask("end", user, wait, performer_id=performer, session_id=session_id)


def _ask(action: str, user: str, wait_s: float, **fields: Any) -> None:
    with _registry() as (client, keys):
        try:
            reply = request(client, keys, action, user, timeout_s=wait_s, **fields)
        except TaggerError as exc:
            fail(str(exc))
    if reply.status != "ok":
        fail(f"{action} refused: {reply.reason} (session {reply.session_id or '-'})")
    click.echo(f"{reply.session_id} {reply.reason}")


def _parse_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r} is not an ISO date or time, e.g. 2025-06-15 or 2025-06-15T12:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
