"""`tagger run` for the overload run: its log in workdir/worker.log, appended to."""

import subprocess
from pathlib import Path

from bench.servers import tagger, tagger_env


def start_worker(
    workdir: Path, url: str, metrics_port: int, *extra: str
) -> subprocess.Popen[bytes]:
    log = (workdir / "worker.log").open("ab")
    return subprocess.Popen(
        tagger("run", *extra),
        env=tagger_env(url, workdir, metrics_port),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
