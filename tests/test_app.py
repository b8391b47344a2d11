"""The caregiver app in real Chromium (Debian's package, driven by Playwright): log in,
filter, open a session, hover and click the timeline, add a note, end the session,
download the bundle and open its timeline, watch an active session update live, erase a
user as an admin; axe-core on every page. Screenshots go to test-artifacts/."""

import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest
from redis import Redis

from tests.conftest import SettingsFactory, event, output, publish, wait_for
from tests.http_service import ROLE_TOKENS, Served, serving

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (.ci/run installs it)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def served(make_settings: SettingsFactory) -> Iterator[Served]:
    with serving(make_settings(session_timeout_s=3600)) as s:
        yield s


@pytest.fixture
def page_for(browser: Any, served: Served) -> Iterator[Any]:
    """A logged-in page per role; every request it makes is checked to stay on 127.0.0.1."""
    contexts: list[Any] = []
    hosts: set[str] = set()

    def make(role: str) -> Any:
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        context.on("request", lambda r: hosts.add(_where(r.url)))
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{served.base}/sessions")  # a page needs a login: to /login and back
        assert "/login" in page.url
        page.fill("#token", ROLE_TOKENS[role])
        page.click("button[type=submit]")
        page.wait_for_url(f"{served.base}/sessions")
        return page

    yield make
    for context in contexts:
        context.close()
    assert hosts <= {"127.0.0.1", "data:", "file:"}, hosts  # the bundle opens from a file


def _where(url: str) -> str:
    parts = urlparse(url)
    return parts.hostname if parts.scheme in ("http", "https", "ws", "wss") else f"{parts.scheme}:"


def some_events(client: Redis, served: Served, user: str, n: int = 12) -> None:
    now = int(time.time() * 1000) - n * 1000
    labels = ["drink", "help", "toilet"]
    events = [event(user, now + i * 1000, modality=["gesture", "speech", "audio"][i % 3],
                    classifier_output={labels[i % 3]: 0.9, "unknown": 0.1})
              for i in range(n)]  # fmt: skip
    publish(client, served.settings, events)
    wait_for(lambda: len([e for e in output(client, served.settings) if e["user_id"] == user]) > n)
    # The session page reads its records from the JSONL file, which the sinks write a
    # moment after the tagged stream (a CI run opened the page before: 1 row of 5).
    logs = served.settings.data_dir / "logs" / "users" / user / "sessions"
    wait_for(lambda: sum(len(f.read_bytes().splitlines()) for f in logs.glob("*.jsonl")) > n)


def open_session_of(page: Any, served: Served, user: str) -> str:
    page.goto(f"{served.base}/sessions?user_id={user}")
    link = page.locator("table.sessions tbody a").first
    sid: str = link.inner_text()
    link.click()
    page.wait_for_url(f"**/sessions/{sid}*")
    page.wait_for_function("() => window.A3CPTimeline && window.A3CPTimeline.current")
    return sid


def mark_position(page: Any, index: int) -> tuple[float, float]:
    """Where the timeline draws record `index` (ECharts' own coordinate conversion)."""
    x, y = page.evaluate(
        """(i) => {
            const d = JSON.parse(document.getElementById('timeline-data').textContent)[i];
            const at = [A3CPTimeline.timeOf(d), d.modality];
            return A3CPTimeline.current.chart.convertToPixel({xAxisIndex: 0, yAxisIndex: 0}, at);
        }""",
        index,
    )
    box = page.locator("[data-timeline-chart]").bounding_box()
    return box["x"] + x, box["y"] + y


def test_filter_open_hover_and_click_the_timeline(
    page_for: Any, served: Served, client: Redis
) -> None:
    some_events(client, served, "ana01")
    some_events(client, served, "ben02", 3)
    page = page_for("caregiver")
    page.goto(f"{served.base}/")
    assert page.locator("table tbody th", has_text="ana01").count() == 1
    page.goto(f"{served.base}/sessions")
    page.fill("#f-user", "ben02")
    page.click("text=Apply")
    rows = page.locator("table.sessions tbody tr")
    assert rows.count() == 1 and "ben02" in rows.first.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "app-sessions.png", full_page=True)

    sid = open_session_of(page, served, "ana01")
    assert page.locator("[data-live='count']").inner_text() == "12"
    page.locator("[data-timeline-chart]").scroll_into_view_if_needed()
    x, y = mark_position(page, 1)  # record 0 is the session.start; 1 the first event
    page.mouse.move(x, y)
    tooltip = page.locator("[data-timeline-chart] div", has_text="source: gesture_classifier")
    tooltip.last.wait_for(state="visible", timeout=10_000)
    assert "top label: drink" in tooltip.last.inner_text()
    page.screenshot(path=ARTIFACTS / "app-session.png")
    page.mouse.click(x, y)
    dialog = page.locator("dialog[open] pre")
    dialog.wait_for()
    record = orjson.loads(dialog.inner_text())
    assert record["session_id"] == sid and record["session_seq"] == 1
    page.click("dialog [data-close]")
    # Keyboard: a row of the table opens the same record; the zoom buttons work.
    page.locator("tr.mark").nth(2).focus()
    page.keyboard.press("Enter")
    assert orjson.loads(page.locator("dialog[open] pre").inner_text())["session_seq"] == 2
    page.keyboard.press("Escape")
    page.click("text=Zoom in")
    zoom = page.evaluate("A3CPTimeline.current.chart.getOption().dataZoom[0]")
    assert (zoom["start"], zoom["end"]) == (25, 75)  # the middle half


def test_note_end_and_bundle(page_for: Any, served: Served, client: Redis, tmp_path: Path) -> None:
    some_events(client, served, "cem03")
    page = page_for("caregiver")
    sid = open_session_of(page, served, "cem03")
    page.fill("#note", "Pointed at the window twice")
    page.click("text=Save note")
    page.wait_for_selector("text=Note saved.")
    assert page.locator("ul.notes li", has_text="Pointed at the window twice").count() == 1
    log = served.settings.data_dir / "logs/users/cem03/sessions" / f"{sid}.jsonl"
    wait_for(lambda: b"Pointed at the window twice" in log.read_bytes())
    note = [orjson.loads(x)["event"] for x in log.read_bytes().splitlines()][-1]
    assert (note["kind"], note["performer_id"]) == ("session.note", "caregiver-name")

    # The list's search finds the session by its note (and nothing by another word).
    page.goto(f"{served.base}/sessions")
    page.fill("#f-q", "WINDOW")
    page.click("text=Apply")
    assert page.locator("table.sessions tbody tr").count() == 1
    page.goto(f"{served.base}/sessions?q=nothing-like-it")
    assert page.locator("table.sessions tbody tr").count() == 0
    page.goto(f"{served.base}/sessions/{sid}")
    page.click("text=End this session")
    page.wait_for_selector("text=Session ended.")
    assert page.locator("h1 .badge").inner_text() == "closed"
    ends = [e for e in output(client, served.settings) if e.get("kind") == "session.end"]
    assert [(e["session_id"], e["close_reason"]) for e in ends] == [(sid, "explicit")]
    assert page.locator("text=End this session").count() == 0

    wait_for(lambda: b"session.end" in log.read_bytes())
    with page.expect_download() as download:
        page.click("text=Download bundle")
    bundle = tmp_path / "bundle.zip"
    download.value.save_as(bundle)
    with zipfile.ZipFile(bundle) as z:
        z.extractall(tmp_path / "bundle")
        assert (
            "Pointed at the window twice"
            in orjson.loads(z.read("session.json"))["notes"][0]["note"]
        )
    timeline = page.context.new_page()
    timeline.goto((tmp_path / "bundle" / "timeline.html").as_uri())
    timeline.wait_for_function("() => window.A3CPTimeline && window.A3CPTimeline.current")
    assert timeline.locator("tr.mark").count() == 12 + 3  # events, start, note, end
    assert timeline.locator("[data-timeline-chart] canvas").count() >= 1
    timeline.screenshot(path=ARTIFACTS / "bundle-timeline.png")


def test_an_active_session_updates_live(page_for: Any, served: Served, client: Redis) -> None:
    some_events(client, served, "dan04", 3)
    page = page_for("viewer")
    sid = open_session_of(page, served, "dan04")
    assert page.locator("[data-live='count']").inner_text() == "3"
    assert page.locator("text=End this session").count() == 0  # a viewer changes nothing
    publish(client, served.settings, [event("dan04", int(time.time() * 1000), modality="image")])
    page.wait_for_function(
        "() => document.querySelector(\"[data-live='count']\").textContent === '4'"
    )
    assert page.locator("tbody[data-live='events'] tr").count() == 3 + 2
    last = page.locator("tbody[data-live='events'] tr").last.inner_text()
    assert "image" in last
    assert sid


def test_only_an_admin_erases_after_typing_the_user_id(
    page_for: Any, served: Served, client: Redis
) -> None:
    some_events(client, served, "eve05", 2)
    caregiver = page_for("caregiver")
    open_session_of(caregiver, served, "eve05")
    assert caregiver.locator("text=Erase this user").count() == 0
    admin = page_for("admin")
    open_session_of(admin, served, "eve05")
    admin.fill("#confirm", "eve06")
    admin.click("text=Erase this user")
    assert "type the user id" in admin.content()
    assert [e for e in output(client, served.settings) if e["user_id"] == "eve05"]
    admin.go_back()
    admin.fill("#confirm", "eve05")
    admin.click("text=Erase this user")
    admin.wait_for_selector("text=eve05 was erased.")
    assert not [e for e in output(client, served.settings) if e["user_id"] == "eve05"]


def test_every_page_passes_axe(browser: Any, served: Served, client: Redis) -> None:
    some_events(client, served, "fay06", 4)
    context = browser.new_context(bypass_csp=True)  # to inject axe; the pages are the same
    page = context.new_page()
    page.goto(f"{served.base}/login")
    found: dict[str, list[str]] = {"login": _axe(page)}
    page.fill("#token", ROLE_TOKENS["admin"])
    page.click("button[type=submit]")
    for name, path in (("home", "/"), ("sessions", "/sessions")):
        page.goto(served.base + path)
        found[name] = _axe(page)
    open_session_of(page, served, "fay06")
    found["session"] = _axe(page)
    context.close()
    assert found == {name: [] for name in found}


def _axe(page: Any) -> list[str]:
    page.evaluate(AXE)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    assert result["testEngine"]["name"] == "axe-core" and result["passes"], "axe did not run"
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])})" for v in result["violations"]
            if v["impact"] in ("serious", "critical")]  # fmt: skip
