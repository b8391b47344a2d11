"""The service's own log lines: readable text, or one JSON object per line for collectors.

Log calls pass numbers and names only (counts, timings, ids of stream entries and
sessions); event contents never go into a log record, so no formatter can leak them."""

import asyncio
import io
import logging
import sys
import time
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(fmt: str, verbose: bool = False) -> None:
    """Route every logger (FastStream's too, see Worker) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # -v: the tagger's own batch lines and FastStream's access lines, not every library's.
    logging.getLogger("tagger").setLevel(logging.DEBUG if verbose else logging.INFO)


def log_every_task() -> None:
    """Log where each of the event loop's tasks waits (SIGUSR1 to a worker): what to
    send along when a worker seems stuck."""
    tasks = asyncio.all_tasks()
    for task in tasks:
        stack = io.StringIO()
        task.print_stack(limit=12, file=stack)
        logging.getLogger("tagger").warning(
            "task %s of %d: %s", task.get_name(), len(tasks), stack.getvalue().strip()
        )
