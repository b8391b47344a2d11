"""bench.app's part 1, page render: one user's big active session tagged, then its page
loaded --loads times in Chromium, each load's figures taken in the page."""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from playwright.sync_api import Page, sync_playwright

from bench.app.browser import MARK_JS, NAVIGATION_JS, launch, logged_in_page, wait_in_page
from bench.app.serve import active_session, start_serve, stop
from bench.servers import start_valkey, tagger, tagger_env
from bench.streams import INPUT
from tagger.connect import sync_client
from tagger.times import iso_ms

PAGE_USER = "app00001"
MODALITIES = ("gesture", "speech", "audio", "image")
LABELS = ("drink", "help", "more", "music", "tired", "outside")
EVENT_GAP_MS = 200


def session_events(n: int, end_ms: int) -> list[dict[str, Any]]:
    """n events of PAGE_USER, one every EVENT_GAP_MS up to end_ms: one session."""
    events = []
    for i in range(n):
        modality = MODALITIES[i % len(MODALITIES)]
        top = round(0.5 + (i % 9) * 0.05, 2)
        events.append(
            {
                "schema_version": "1.0.1",
                "record_id": str(uuid.uuid4()),
                "user_id": PAGE_USER,
                "timestamp": iso_ms(end_ms - (n - 1 - i) * EVENT_GAP_MS),
                "modality": modality,
                "source": f"{modality}_classifier",
                "performer_id": "system",
                "classifier_output": {LABELS[i % len(LABELS)]: top, "unknown": round(1 - top, 2)},
            }
        )
    return events


def page_render(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tagger-app-"))
    server, url = start_valkey(workdir)
    env = tagger_env(url, workdir)
    serve = None
    try:
        client = sync_client(url)
        events = session_events(args.events, int(time.time() * 1000))
        for chunk in range(0, len(events), 1000):
            pipe = client.pipeline(transaction=False)
            for e in events[chunk : chunk + 1000]:
                pipe.xadd(INPUT, {"data": orjson.dumps(e)})
            pipe.execute()
        started = time.perf_counter()
        with (workdir / "burst.log").open("wb") as log:
            subprocess.run(
                tagger("run", "--burst"), env=env, stdout=log, stderr=log, check=True, timeout=600
            )
        burst_s = time.perf_counter() - started
        serve, base = start_serve(env, workdir / "serve.log")
        sid = active_session(base, PAGE_USER)
        if sid is None:
            raise SystemExit(f"{PAGE_USER} has no active session")
        loads = []
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = logged_in_page(browser, base)
            for n in range(args.loads):
                loads.append(load_once(page, f"{base}/sessions/{sid}", n + 1))
                print(json.dumps(loads[-1]), flush=True)
            browser.close()
    finally:
        stop(serve)
        server.stop()

    def figures(key: str) -> dict[str, float]:
        values = [x[key] for x in loads]
        return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}

    return {
        "events": args.events,
        "session_id": sid,
        "burst_s": round(burst_s, 1),
        "html_bytes": loads[0]["html_bytes"],
        "records_in_page": loads[0]["records"],
        "table_rows": loads[0]["table_rows"],
        **{k: figures(k) for k in ("goto_load_ms", "load_ms", "interactive_ms", "hover_ms")},
    }


def load_once(page: Page, url: str, n: int) -> dict[str, Any]:
    page.mouse.move(5, 5)  # off the chart: the hover below starts from nothing
    started = time.perf_counter()
    response = page.goto(url, wait_until="load")
    goto_ms = (time.perf_counter() - started) * 1000
    assert response is not None and response.ok, response
    html = response.body()
    wait_in_page(page, "window.__bench && window.__bench.interactive !== null")
    probe = page.evaluate("({...window.__bench})")
    timing = page.evaluate(NAVIGATION_JS)
    x, y = page.evaluate(MARK_JS)
    page.mouse.move(5, 5)
    page.evaluate("window.__bench.arm()")
    page.mouse.move(x, y)
    wait_in_page(page, "window.__bench.tooltip !== null")
    hover = page.evaluate("({...window.__bench})")
    return {
        "load": n,
        "goto_load_ms": round(goto_ms, 1),
        "load_ms": round(timing["load"], 1),
        "dom_content_loaded_ms": round(timing["dom_content_loaded"], 1),
        "chart_finished_ms": round(probe["finished"], 1),
        "interactive_ms": round(probe["interactive"], 1),
        "hover_ms": round(hover["tooltip"] - hover["hoverStart"], 1),
        "html_bytes": len(html),
        "records": page.evaluate(
            "JSON.parse(document.getElementById('timeline-data').textContent).length"
        ),
        "table_rows": page.locator("tr.mark").count(),
    }
