"""What every command shares: the console, failing with one line, loading settings."""

import sys
from typing import NoReturn

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tagger.logs import configure_logging
from tagger.server import EmbeddedValkey
from tagger.settings import Settings

console = Console()


def fail(message: str, code: int = 1) -> NoReturn:
    """One line saying why, then exit."""
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def load_settings() -> Settings:
    """The settings, with logging set up as they ask (`-v` on the command adds DEBUG)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'env'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"bad TAGGER_* settings: {problems}", code=2)
    ctx = click.get_current_context(silent=True)
    configure_logging(settings.log_format, bool(ctx and ctx.find_root().params.get("verbose")))
    return settings


def progress_bar() -> Progress:
    """The progress bar every long command shows."""
    return Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def running_server_url(settings: Settings) -> str:
    """The server to look at: TAGGER_REDIS_URL, or the embedded one if it runs (a command
    that only looks must not start an empty server)."""
    url = settings.redis_url or EmbeddedValkey(settings.data_dir).running_url()
    if url is None:
        fail(
            f"no embedded Valkey server is running for {settings.data_dir.resolve()}; "
            "start `tagger run`, or set TAGGER_REDIS_URL to the server to look at"
        )
    return url
