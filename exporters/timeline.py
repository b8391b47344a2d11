"""A self-contained HTML timeline of one session: one lane per modality, hover for details."""

import html
from typing import Any

import orjson

from tagger.times import epoch_ms, parse_time

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Session __TITLE__</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
 h1 { font-size: 18px; margin: 0 0 4px; } p.sub { margin: 0 0 16px; color: #555; }
 .lane-label { font-size: 12px; fill: #444; } .axis { stroke: #bbb; }
 .mark { stroke: #fff; stroke-width: 1; cursor: pointer; } .mark:hover { stroke: #000; }
 .late { stroke: #d33; stroke-width: 2; }
 .boundary { stroke: #888; stroke-dasharray: 4 3; }
 #tip { position: fixed; display: none; background: #fff; border: 1px solid #999;
        padding: 6px 8px; font-size: 12px; white-space: pre; pointer-events: none; }
</style></head>
<body>
<h1>Session __TITLE__</h1>
<p class="sub">__SUBTITLE__</p>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="tip"></div>
<script type="application/json" id="events">__DATA__</script>
<script>
(function () {
  const events = JSON.parse(document.getElementById("events").textContent);
  const svg = document.getElementById("timeline"), tip = document.getElementById("tip");
  const NS = "http://www.w3.org/2000/svg", left = 110, width = 900, laneH = 40;
  const colours = {gesture: "#3b7dd8", speech: "#2a9d5b", audio: "#e08a1e",
                   image: "#8e5bd0", multimodal: "#c2407a", other: "#777"};
  const lanes = [...new Set(events.map(e => e.lane))];
  const times = events.map(e => e.t), t0 = Math.min(...times), t1 = Math.max(...times);
  const x = t => left + (t1 === t0 ? width / 2 : (t - t0) / (t1 - t0) * width);
  svg.setAttribute("width", left + width + 30);
  svg.setAttribute("height", lanes.length * laneH + 40);
  function el(name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    svg.appendChild(node); return node;
  }
  lanes.forEach((lane, i) => {
    const y = 20 + i * laneH + laneH / 2;
    el("line", {class: "axis", x1: left, x2: left + width, y1: y, y2: y});
    el("text", {class: "lane-label", x: 8, y: y + 4}).textContent = lane;
  });
  for (const b of events.filter(e => e.boundary)) {
    el("line", {class: "boundary", x1: x(b.t), x2: x(b.t), y1: 10, y2: lanes.length * laneH + 30});
  }
  for (const e of events) {
    const y = 20 + lanes.indexOf(e.lane) * laneH + laneH / 2;
    const mark = el("circle", {class: "mark" + (e.late ? " late" : ""), cx: x(e.t), cy: y,
                               r: e.boundary ? 7 : 5, fill: colours[e.lane] || colours.other});
    mark.addEventListener("mousemove", ev => {
      tip.textContent = e.detail; tip.style.display = "block";
      tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
    });
    mark.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  }
})();
</script>
</body></html>
"""


def timeline_html(session: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """The page for a session's events (in time order); needs no network to open."""
    marks = []
    for e in events:
        kind = e.get("kind", "message")
        boundary = kind != "message"
        lane = "session" if boundary else str(e.get("modality") or "other")
        when = e.get("start_time") if kind == "session.start" else e.get("end_time")
        stamp = str(when if boundary and when else e.get("timestamp"))
        label = _top_label(e.get("classifier_output"))
        detail = "\n".join(
            f"{k}: {v}"
            for k, v in (
                ("time", stamp),
                ("event", kind),
                ("source", e.get("source")),
                ("performer", e.get("performer_id")),
                ("top label", label),
                ("seq", e.get("session_seq")),
                ("late", e.get("late")),
                ("note", e.get("note")),
            )
            if v not in (None, "", False)
        )
        marks.append(
            {
                "t": _ms(stamp),
                "lane": lane,
                "boundary": boundary,
                "late": bool(e.get("late")),
                "detail": detail,
            }
        )
    subtitle = (
        f"user {session.get('user_id')} · {len(marks)} marks · "
        f"{session.get('start_time')} → {session.get('end_time') or 'open'}"
    )
    # "</" cannot appear inside the JSON, so the data cannot close its script element.
    data = orjson.dumps(marks).decode().replace("</", "<\\/")
    page = _PAGE.replace("__TITLE__", html.escape(str(session.get("session_id"))))
    return page.replace("__SUBTITLE__", html.escape(subtitle)).replace("__DATA__", data)


def _top_label(scores: Any) -> str | None:
    if not isinstance(scores, dict) or not scores:
        return None
    label, p = max(scores.items(), key=lambda kv: kv[1])
    return f"{label} ({p:.2f})"


def _ms(stamp: str) -> int:
    moment = parse_time(stamp)
    return epoch_ms(moment) if moment else 0
