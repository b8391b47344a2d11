"""The commands a newcomer types: demo, publish, health, and refused settings."""

import os
import subprocess
from pathlib import Path

import orjson
from redis import Redis

from tests.conftest import SettingsFactory, event, tagged, tagger_cmd, tagger_env


def run_tagger(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tagger_cmd(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_demo_on_the_embedded_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env["COLUMNS"] = "200"
    done = run_tagger("demo", "--users", "4", "--events-per-user", "300", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in done.stdout.splitlines()
        if line.count("│") == 3
    }
    assert lines["users"] == "4"
    assert lines["events tagged"] == "1200"
    assert int(lines["sessions opened"]) >= 4
    assert lines["dead letters"].startswith("5 (")
    assert (tmp_path / "tagger-data" / "valkey" / "appendonlydir").is_dir()


def test_publish_then_run(tmp_path: Path, client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    events = [event(), event(user_id="mira02")]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"\n")
    env = tagger_env(settings)
    published = run_tagger("publish", str(source), env=env)
    assert published.returncode == 0, published.stderr
    assert "published 2 entries" in published.stdout
    assert run_tagger("run", "--burst", env=env).returncode == 0
    assert [e["record_id"] for e in tagged(client, settings)] == [e["record_id"] for e in events]


def test_health(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    env = tagger_env(settings)
    missing = run_tagger("health", env=env)
    assert missing.returncode == 1
    assert "tagger run" in missing.stderr  # says what to do
    assert run_tagger("run", "--burst", env=env).returncode == 0  # creates the group
    healthy = run_tagger("health", env=env)
    assert healthy.returncode == 0, healthy.stderr
    env["TAGGER_REDIS_URL"] = "redis://127.0.0.1:1"
    down = run_tagger("health", env=env)
    assert down.returncode == 1
    assert len(down.stderr.strip().splitlines()) == 1


def test_misspelt_setting_is_refused(make_settings: SettingsFactory) -> None:
    env = tagger_env(make_settings())
    env["TAGGER_SESSION_TIMEOUT"] = "60"
    done = run_tagger("run", "--burst", env=env)
    assert done.returncode == 2
    assert "TAGGER_SESSION_TIMEOUT" in done.stderr


def test_readme_documents_every_setting() -> None:
    from tagger.settings import Settings

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`TAGGER_{n.upper()}`" not in readme]
    assert missing == []
