"""`tagger sessions ...`: list, show, validate, start and end sessions."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from redis import Redis
from rich.table import Table

from tagger.cli_common import console, fail, load_settings
from tagger.connect import sync_client
from tagger.control import request
from tagger.errors import SERVER_ERRORS, TaggerError, server_advice
from tagger.keys import Keys
from tagger.registry import get_session, list_sessions, validate
from tagger.server import redis_url


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
    """Sessions, newest first."""
    since_ms = _parse_ms(since) if since else None
    with _registry() as (client, keys):
        found = list_sessions(
            client, keys, user_id=user, status=status, since_ms=since_ms, limit=limit, offset=offset
        )
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table()
    table.add_column("session", no_wrap=True)  # an id must stay whole to be copied
    for name in ("user", "status", "start", "duration", "events", "closed by", "training"):
        table.add_column(name)
    for s in found:
        table.add_row(
            s["session_id"],
            s["user_id"],
            s["status"],
            s["start_time"],
            _duration(s),
            str(s.get("events", 0)),
            s.get("close_reason", ""),
            s.get("training_intent_label") or ("yes" if s["is_training_data"] else ""),
        )
    console.print(table)


@sessions.command()
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def show(session_id: str, as_json: bool) -> None:
    """Everything the registry holds about one session."""
    with _registry() as (client, keys):
        session = get_session(client, keys, session_id)
    if session is None:
        fail(f"unknown session {session_id}; `tagger sessions list` shows the known ones")
    if as_json:
        click.echo(orjson.dumps(session, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(show_header=False, title=session_id)
    for name, value in sorted(session.items()):
        if isinstance(value, dict):
            value = ", ".join(f"{k} {n}" for k, n in sorted(value.items(), key=lambda kv: -kv[1]))
        table.add_row(name, str(value))
    table.add_row("duration", _duration(session))
    console.print(table)


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


def _duration(session: dict[str, Any]) -> str:
    end_ms = session.get("end_ms", session.get("last_ms", session["start_ms"]))
    seconds = max(0, (end_ms - session["start_ms"]) // 1000)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
