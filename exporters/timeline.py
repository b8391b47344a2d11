"""The bundle's timeline.html: the app's session timeline (exporters/assets/timeline.js on
the vendored Apache ECharts), inlined into one file that opens offline, with the records
as a table beside it (the accessible form of the same marks)."""

import html
from pathlib import Path
from typing import Any

import orjson

from exporters.records import record_time, top_label

ASSETS = Path(__file__).parent / "assets"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Session __TITLE__</title>
<style>
 body { font: 15px/1.5 system-ui, sans-serif; margin: 24px; color: #1a1a1a; }
 h1 { font-size: 22px; margin: 0 0 4px; } p.sub { margin: 0 0 16px; color: #4a4a4a; }
 .chart { width: 100%; height: 380px; border: 1px solid #c8c8c8; border-radius: 6px; }
 .zoom { display: flex; gap: 8px; margin: 8px 0; flex-wrap: wrap; }
 button { font: inherit; padding: 4px 12px; border: 1px solid #0b57a4; color: #0b57a4;
          background: #fff; border-radius: 6px; cursor: pointer; }
 :focus-visible { outline: 3px solid #f2a900; outline-offset: 2px; }
 table { border-collapse: collapse; width: 100%; margin-top: 16px; }
 th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #ddd; }
 tr.mark { cursor: pointer; } tr.mark:hover, tr.mark:focus { background: #fff5d6; }
 dialog { max-width: min(900px, 92vw); max-height: 80vh; overflow: auto; }
 pre { white-space: pre-wrap; word-break: break-word; font-size: 13px; }
</style>
<script>__ECHARTS__</script>
<script>__TIMELINE__</script>
</head>
<body>
<main data-timeline>
<h1>Session __TITLE__</h1>
<p class="sub">__SUBTITLE__</p>
<p>Scroll or drag on the chart to zoom and pan; hover a mark for its time, source and top
label; click it, or a row of the table, for the whole record. Times are local.</p>
<div class="zoom" role="group" aria-label="Zoom and pan the timeline">
 <button type="button" data-timeline-action="zoom-in">Zoom in</button>
 <button type="button" data-timeline-action="zoom-out">Zoom out</button>
 <button type="button" data-timeline-action="pan-left">Earlier</button>
 <button type="button" data-timeline-action="pan-right">Later</button>
 <button type="button" data-timeline-action="reset">Whole session</button>
</div>
<div data-timeline-chart class="chart" role="img"
 aria-label="Timeline chart; the table below lists the same records"></div>
<dialog aria-labelledby="record-title"><h2 id="record-title">Record</h2><pre></pre>
<button type="button" data-close>Close</button></dialog>
<table><caption>Records in time order</caption>
<thead><tr><th scope="col">Time (UTC)</th><th scope="col">Record</th><th scope="col">Modality</th>
<th scope="col">Source</th><th scope="col">Performer</th><th scope="col">Detail</th></tr></thead>
<tbody>__ROWS__</tbody></table>
</main>
<script type="application/json" id="timeline-data">__DATA__</script>
</body></html>
"""


def timeline_html(session: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """The page for a session's records (in time order); needs no network to open."""
    summary = session.get("summary", {})
    subtitle = (
        f"{session.get('user_id')}: {summary.get('event_count', 0)} events, "
        f"{session.get('start_time') or '?'} to {session.get('end_time') or 'now (active)'}"
        + (f", {session['close_reason']}" if session.get("close_reason") else "")
    )
    rows = "".join(_row(n, e) for n, e in enumerate(events))
    data = orjson.dumps(events).decode().replace("<", "\\u003c")
    return (
        _PAGE.replace("__ECHARTS__", _asset("echarts.min.js"))
        .replace("__TIMELINE__", _asset("timeline.js"))
        .replace("__TITLE__", html.escape(str(session.get("session_id"))))
        .replace("__SUBTITLE__", html.escape(subtitle))
        .replace("__ROWS__", rows)
        .replace("__DATA__", data)
    )


def _asset(name: str) -> str:
    # An inline script ends at the first "</script"; the vendored code must not hold one.
    text = (ASSETS / name).read_text()
    assert "</script" not in text.lower(), f"{name} cannot be inlined"
    return text


def _row(index: int, e: dict[str, Any]) -> str:
    kind = e.get("kind", "message")
    moment = record_time(e)
    detail = e.get("note") or e.get("close_reason") or top_label(e.get("classifier_output"))
    if e.get("late"):
        detail = f"late {detail}".strip()
    cells = [
        moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else "",
        "event" if kind == "message" else kind,
        e.get("modality") or "",
        e.get("source") or "",
        e.get("performer_id") or "",
        detail,
    ]
    tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
    return f'<tr class="mark" tabindex="0" data-event-index="{index}">{tds}</tr>'
