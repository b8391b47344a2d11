"""bench.app's part 2: tagging latency with the app open (B: Chromium on the live page;
C: a plain HTTP client on its live stream) against `tagger run` alone (A)."""

import argparse
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from bench.app.browser import launch, logged_in_page, wait_in_page
from bench.app.cpu_seconds import cpu_snapshot, cpu_used
from bench.app.serve import TOKEN, active_session, start_serve, stop
from bench.open_loop import (
    TaggedReader,
    event_payload,
    latencies_ms,
    mean_batch_size,
    offer,
    percentiles_ms,
    wait_drained,
)
from bench.servers import free_port, start_valkey, tagger, tagger_env
from bench.streams import INPUT, OUTPUT
from tagger.connect import sync_client

CONTENDERS = {
    "A": "tagger run alone",
    "B": "+ tagger serve + Chromium with the live page open",
    "C": "+ tagger serve + the live stream read by a plain HTTP client (no browser)",
}


def live_page(
    base: str,
    sid: str,
    ready: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
    out: multiprocessing.connection.Connection,
) -> None:
    """In its own process: Chromium showing the session's live page until told to stop;
    then how many rows the page had at the start and at the end."""
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = logged_in_page(browser, base)
        page.goto(f"{base}/sessions/{sid}", wait_until="load")
        wait_in_page(page, "window.__bench && window.__bench.interactive !== null")
        first = page.locator("tr.mark").count()
        ready.set()
        while not done.is_set():
            page.wait_for_timeout(200)  # Playwright's loop keeps running meanwhile
        out.send({"rows_at_open": first, "rows_at_end": page.locator("tr.mark").count()})
        browser.close()


def live_client(
    base: str,
    sid: str,
    ready: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
    out: multiprocessing.connection.Connection,
) -> None:
    """In its own process: the page's EventSource without the browser (the server's side
    of an open page alone): reads the session's live stream until told to stop."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{base}/api/v1/sessions/{sid}/live"
    got = 0
    with httpx.stream("GET", url, headers=headers, timeout=None) as reply:
        ready.set()
        for line in reply.iter_lines():  # an ": idle" comment at least every second
            got += line == "event: message"
            if done.is_set():
                break
    out.send({"rows_at_open": 0, "rows_at_end": got})


def latency_once(args: argparse.Namespace, contender: str) -> dict[str, Any]:
    """bench/latency.py's run_once for `tagger run`, with (B, C) or without (A) the app."""
    workdir = Path(tempfile.mkdtemp(prefix="tagger-app-latency-"))
    server, url = start_valkey(workdir)
    metrics_port = free_port()
    env = tagger_env(url, workdir, metrics_port)
    mp = multiprocessing.get_context("spawn")  # no fork of a process that ran Playwright
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(tagger("run"), env=env, stdout=log, stderr=log)
    serve = None
    browser = None
    client = sync_client(url)
    reader = TaggedReader(url, mp)
    ready, done = mp.Event(), mp.Event()
    page_receive, page_send = mp.Pipe(duplex=False)
    page_rows: dict[str, int] = {}
    try:
        while not client.exists(INPUT):  # the consumer made its group
            time.sleep(0.05)
        # One event of lat0000 first, in both contenders: its session exists before the
        # producer starts, for B's page to open. Not counted.
        client.xadd(INPUT, {"data": event_payload(str(uuid.uuid4()), 0, args.users)})
        while not client.xlen(OUTPUT):
            time.sleep(0.05)
        if contender in ("B", "C"):
            serve, base = start_serve(env, workdir / "serve.log")
            sid = active_session(base, "lat0000")
            if sid is None:
                raise SystemExit("lat0000 has no active session")
            follower = live_page if contender == "B" else live_client
            browser = mp.Process(target=follower, args=(base, sid, ready, done, page_send))
            browser.start()
            if not ready.wait(timeout=120):
                raise SystemExit("the live page did not open")
        reader.start()
        roots = {
            "valkey": int(client.info("server")["process_id"]),
            "tagger_run": worker.pid,
            "tagger_serve": serve.pid if serve else None,
            "chromium": browser.pid if browser and contender == "B" else None,
            "live_client": browser.pid if browser and contender == "C" else None,
        }
        cpu_before = cpu_snapshot(roots)
        offered = offer(client, args.rate, args.seconds, args.users)
        wait_drained(client)
        cpu = cpu_used(cpu_before, cpu_snapshot(roots))
        time.sleep(1.5)  # the reader's last XREAD; the page's last live records
        mean_batch = mean_batch_size(metrics_port)
        arrived = reader.arrived()
        if browser is not None:
            done.set()
            page_rows = page_receive.recv()
    finally:
        done.set()
        reader.close()
        if browser is not None:
            browser.join(timeout=30)
            if browser.is_alive():
                browser.kill()
        stop(serve)
        stop(worker)
        server.stop()
    latencies, _ids = latencies_ms(offered.sent, arrived)
    line: dict[str, Any] = {
        "contender": contender,
        "with": CONTENDERS[contender],
        "rate": args.rate,
        "achieved_rate": offered.achieved_rate,
        "measured": len(offered.sent),
        "arrived": len(latencies),
        **percentiles_ms(latencies),
        "mean_batch_size": mean_batch,
        "cpu_s": cpu,  # from the producer's start to the drain
    }
    if page_rows:
        # lat0000's events from the producer: every args.users-th, from the first.
        line["live_records_seen"] = page_rows["rows_at_end"] - page_rows["rows_at_open"]
        line["page_user_events"] = -(-offered.events // args.users)
    return line
