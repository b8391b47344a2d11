"""File commands: bundles (`export`, `import`, `replay`), `dataset`, `compact`, `erase`."""

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

import click
import orjson

from exporters.bundle import export_bundle, import_bundle, imported_events, read_events
from exporters.compact import compact
from exporters.dataset import build_dataset
from tagger.cli_common import console, fail, load_settings, progress_bar
from tagger.connect import sync_client
from tagger.erase import erase_user
from tagger.errors import SERVER_ERRORS, TaggerError
from tagger.keys import Keys
from tagger.server import redis_url
from tagger.times import parse_time


@click.command("export")
@click.argument("session_id", required=False)
@click.option("--user", help="Export every session of this user (with --out DIR).")
@click.option("--since", help="With --user: sessions that started on or after this date.")
@click.option("--until", help="With --user: sessions that started before this date.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="FILE.zip, or DIR.")
def export_command(
    session_id: str | None, user: str | None, since: str | None, until: str | None, out: Path
) -> None:
    """Write a bundle: session.json, events.jsonl, events.parquet, timeline.html."""
    settings = load_settings()
    if (session_id is None) == (user is None):
        fail("name one SESSION_ID, or --user U with --out DIR", code=2)
    try:
        if session_id:
            manifest = export_bundle(settings.data_dir, session_id, out)
            console.print(f"wrote {out} ({len(manifest['files'])} files, checksummed)")
            return
        assert user is not None
        chosen = _user_sessions(settings.data_dir, user, since, until)
        with progress_bar() as progress:
            task = progress.add_task("exporting", total=len(chosen))
            for sid in chosen:
                export_bundle(settings.data_dir, sid, out / f"{sid}.zip")
                progress.advance(task)
    except TaggerError as exc:
        fail(str(exc))
    console.print(f"wrote {len(chosen)} bundles to {out}")


def _user_sessions(data_dir: Path, user: str, since: str | None, until: str | None) -> list[str]:
    low, high = (_day(since) if since else None), (_day(until) if until else None)
    chosen = []
    for log in sorted((data_dir / "logs" / "users" / user / "sessions").glob("sess_*.jsonl")):
        events = read_events(log)
        start = parse_time(events[0].get("start_time") or events[0].get("timestamp"))
        if start and (low is None or start >= low) and (high is None or start < high):
            chosen.append(log.stem)
    return chosen


def _day(text: str) -> datetime:
    moment = parse_time(text if "T" in text else f"{text}T00:00:00")
    if moment is None:
        fail(f"{text!r} is not a date (YYYY-MM-DD) or ISO time", code=2)
    return moment


@click.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(bundle: Path) -> None:
    """Check a bundle's checksums and unpack it for replay."""
    settings = load_settings()
    try:
        manifest = import_bundle(settings.data_dir, bundle)
    except TaggerError as exc:
        fail(str(exc))
    console.print(f"ok: {manifest['session_id']} ({len(manifest['files'])} files match)")


@click.command()
@click.argument("session_id")
@click.option("--to-stream", required=True, help="Stream to publish the events to.")
@click.option("--fast", is_flag=True, help="As fast as possible instead of the original spacing.")
@click.option("--speed", default=1.0, show_default=True, help="With spacing: 2 = twice as fast.")
def replay(session_id: str, to_stream: str, fast: bool, speed: float) -> None:
    """Publish an imported session's events again, in order."""
    settings = load_settings()
    try:
        events = imported_events(settings.data_dir, session_id)
        with redis_url(settings) as url, sync_client(url) as client, progress_bar() as bar:
            task = bar.add_task("replaying", total=len(events))
            previous = None
            for event in events:
                moment = parse_time(event.get("timestamp"))
                if not fast and previous and moment:
                    time.sleep(max(0.0, (moment - previous).total_seconds() / speed))
                previous = moment or previous
                client.xadd(to_stream, {"data": orjson.dumps(event)})
                bar.advance(task)
    except (TaggerError, *SERVER_ERRORS) as exc:
        fail(str(exc))
    console.print(f"replayed {len(events)} events of {session_id} to {to_stream}")


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--since", help="Events on or after this date (YYYY-MM-DD or ISO time).")
@click.option("--until", help="Events before this date.")
@click.option("--training-only", is_flag=True, help="Only sessions flagged is_training_data.")
@click.option("--split-by", type=click.Choice(["user", "session"]), help="Train/test split.")
@click.option("--test-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed", default=0, show_default=True)
def dataset(
    out: Path,
    since: str | None,
    until: str | None,
    training_only: bool,
    split_by: Literal["user", "session"] | None,
    test_fraction: float,
    seed: int,
) -> None:
    """Write a Parquet training set with a manifest; no user/session is in both splits."""
    settings = load_settings()
    try:
        with progress_bar() as bar:
            bar.add_task("building", total=None)
            manifest = build_dataset(
                settings.data_dir,
                out,
                since=_day(since) if since else None,
                until=_day(until) if until else None,
                training_only=training_only,
                split_by=split_by,
                test_fraction=test_fraction,
                seed=seed,
            )
    except TaggerError as exc:
        fail(str(exc))
    for name, meta in manifest["files"].items():
        console.print(f"{out / name}: {meta['rows']} rows")


@click.command("compact")
@click.option("--date", help="Only this date's partition (YYYY-MM-DD).")
def compact_command(date: str | None) -> None:
    """Merge small Parquet part files without changing the rows (pauses the sink)."""
    settings = load_settings()
    if date and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        fail(f"--date {date!r} is not YYYY-MM-DD", code=2)
    try:
        with redis_url(settings) as url, sync_client(url) as client:
            report = compact(client, Keys.every_partition(settings), settings.data_dir, date)
    except (TaggerError, *SERVER_ERRORS, OSError) as exc:
        fail(str(exc))
    for line in report:
        console.print(
            f"{line['partition']}: {line['files_before']} files -> "
            f"{line['files_after']} ({line['rows']} rows)"
        )


@click.command("erase")
@click.option("--user", "user_id", required=True, help="The user whose data goes.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def erase_command(user_id: str, yes: bool, as_json: bool) -> None:
    """Right to erasure: remove the user's sessions and events from Redis, the JSONL logs
    and the Parquet files (the file sinks pause meanwhile), and report what went."""
    settings = load_settings()
    if not yes:
        click.confirm(f"Erase every session and event of {user_id!r} for good?", abort=True)
    try:
        with redis_url(settings) as url, sync_client(url) as client:
            report = erase_user(client, Keys.every_partition(settings), settings.data_dir, user_id)
    except (TaggerError, *SERVER_ERRORS, OSError) as exc:
        fail(f"{exc}. What was removed stays removed; run the same command again to finish.")
    if as_json:
        click.echo(orjson.dumps({"user_id": user_id, **report}).decode())
        return
    for what, count in report.items():
        console.print(f"{what.replace('_', ' ')}: {count}")
    console.print(
        "Bundles and datasets written outside the data directory are not touched; "
        "delete copies of them by hand."
    )
