"""Caregiver bundles: export, check, import, replay, and the timeline seen in a browser."""

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from redis import Redis

from exporters.bundle import BundleError, export_bundle, import_bundle
from tagger.settings import Settings
from tests.conftest import (
    SettingsFactory,
    event,
    output,
    publish,
    run_burst,
    streams,
    tagged,
    tagger_cmd,
    tagger_env,
)
from tests.reference import observed_partition

T0 = 1_750_000_000_000
MINUTE_MS = 60_000
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


def tagged_session(client: Redis, settings: Settings) -> tuple[str, list[dict[str, Any]]]:
    """Two sessions of one user; returns the first (closed) one's id and the events sent."""
    scores = [{"hungry": 0.8, "unknown": 0.2}, {"help": 0.6, "unknown": 0.4}]
    sent = [
        event("elias01", T0 + m * 20_000, modality=mod, classifier_output=scores[m % 2])
        for m, mod in enumerate(["gesture", "speech", "gesture", "audio", "gesture", "image"])
    ]
    publish(client, settings, [*sent, event("elias01", T0 + 90 * MINUTE_MS)])
    run_burst(settings)
    return tagged(client, settings)[0]["session_id"], sent


def test_export_writes_a_checked_bundle(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    sid, sent = tagged_session(client, settings)
    bundle = tmp_path / "out" / "b.zip"
    manifest = export_bundle(settings.data_dir, sid, bundle)

    with zipfile.ZipFile(bundle) as z:
        assert sorted(z.namelist()) == sorted(["manifest.json", *manifest["files"]])
        for name, meta in manifest["files"].items():
            assert hashlib.sha256(z.read(name)).hexdigest() == meta["sha256"]
        session = orjson.loads(z.read("session.json"))
        lines = [orjson.loads(x) for x in z.read("events.jsonl").splitlines()]
        z.extract("events.parquet", tmp_path)
    assert session["status"] == "closed" and session["close_reason"] == "timeout"
    summary = session["summary"]
    assert summary["event_count"] == 6
    assert summary["by_modality"] == {"gesture": 3, "speech": 1, "audio": 1, "image": 1}
    assert summary["top_labels"] == {"hungry": 3, "help": 3}
    assert summary["duration_s"] == 100.0
    assert [e.get("kind", "message") for e in lines] == [
        "session.start",
        *["message"] * 6,
        "session.end",
    ]
    assert [e["record_id"] for e in lines[1:-1]] == [e["record_id"] for e in sent]
    table = pq.read_table(tmp_path / "events.parquet")
    assert table.num_rows == 8


def test_a_changed_bundle_is_refused(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    sid, _ = tagged_session(client, settings)
    good = tmp_path / "good.zip"
    export_bundle(settings.data_dir, sid, good)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(
                name, data.replace(b"elias01", b"mallory") if name == "events.jsonl" else data
            )
    with pytest.raises(BundleError, match="checksum"):
        import_bundle(settings.data_dir, bad)
    assert import_bundle(settings.data_dir, good)["session_id"] == sid


def test_import_and_replay_reproduce_the_session(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    sid, sent = tagged_session(client, settings)
    bundle = tmp_path / "b.zip"
    env = tagger_env(settings)

    def cli(*args: str) -> str:
        done = subprocess.run(
            tagger_cmd(*args), env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("export", sid, "--out", str(bundle))
    cli("import", str(bundle))
    again = settings.model_copy(
        update={
            "input_stream": settings.input_stream + ":again",
            "output_stream": settings.output_stream + ":again",
            "state_prefix": settings.state_prefix + ":again",
        }
    )
    cli("replay", sid, "--to-stream", streams(again).input_stream, "--fast")
    replayed = [orjson.loads(f[b"data"]) for _, f in client.xrange(streams(again).input_stream)]
    assert replayed == sent  # as first published: no tagger fields
    run_burst(again, sinks=False)
    assert observed_partition(tagged(client, again)) == observed_partition(
        [e for e in tagged(client, settings) if e["session_id"] == sid]
    )


def test_export_all_sessions_of_a_user(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    tagged_session(client, settings)
    done = subprocess.run(
        tagger_cmd(
            "export",
            "--user",
            "elias01",
            "--since",
            "2025-06-15",
            "--out",
            str(tmp_path / "bundles"),
        ),
        env=tagger_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    sessions = {e["session_id"] for e in output(client, settings)}
    assert {p.stem for p in (tmp_path / "bundles").glob("*.zip")} == sessions


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (.ci/run installs it)")
def test_timeline_shows_one_mark_per_event_in_a_browser(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    sid, sent = tagged_session(client, settings)
    bundle = tmp_path / "b.zip"
    export_bundle(settings.data_dir, sid, bundle)
    with zipfile.ZipFile(bundle) as z:
        z.extract("timeline.html", tmp_path)
    page = (tmp_path / "timeline.html").as_uri()
    assert CHROMIUM is not None
    common = [CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count('class="mark') == len(sent) + 2  # events plus start and end
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "timeline.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [*common, "--window-size=1100,420", f"--screenshot={shot}", page],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 5000
