// The session timeline, drawn with Apache ECharts (vendored beside this file): a real time
// axis with clock labels, one lane per modality, the boundaries and notes marked, zoom and
// pan (wheel, drag, the slider, or the buttons for keyboard users), hover for time, source
// and top label, click for the event's whole JSON. The same file serves the app's session
// page and the bundle's timeline.html, which inlines it (no network either way).
(function () {
  "use strict";

  // Colours chosen to stay apart for the common colour-vision deficiencies (Okabe-Ito).
  var COLOURS = {
    gesture: "#0072B2", speech: "#009E73", audio: "#D55E00", image: "#CC79A7",
    multimodal: "#E69F00", other: "#555555", session: "#333333"
  };
  var SESSION_LANE = "session";

  function kindOf(e) { return e.kind || "message"; }

  function timeOf(e) {
    var kind = kindOf(e);
    var stamp = kind === "session.start" ? e.start_time : kind === "session.end" ? e.end_time : e.timestamp;
    return Date.parse(stamp || e.timestamp);
  }

  function topLabel(scores) {
    if (!scores || typeof scores !== "object") return "";
    var best = "", top = -Infinity;
    Object.keys(scores).forEach(function (k) { if (scores[k] > top) { top = scores[k]; best = k; } });
    return best ? best + " (" + Number(top).toFixed(2) + ")" : "";
  }

  function laneOf(e) {
    return kindOf(e) === "message" ? String(e.modality || "other") : SESSION_LANE;
  }

  function clock(ms) {
    var d = new Date(ms);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function describe(e) {
    var lines = [clock(timeOf(e)) + "  " + (kindOf(e) === "message" ? "event" : kindOf(e))];
    if (e.source) lines.push("source: " + e.source);
    if (e.performer_id) lines.push("performer: " + e.performer_id);
    var label = topLabel(e.classifier_output);
    if (label) lines.push("top label: " + label);
    if (e.late) lines.push("late");
    if (e.note) lines.push("note: " + e.note);
    if (e.close_reason) lines.push("ended: " + e.close_reason);
    return lines;
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function mount(root, events) {
    var chartBox = root.querySelector("[data-timeline-chart]");
    var dialog = root.querySelector("dialog");
    var lanes = [];
    var pending = null;  // a redraw scheduled for records that arrived live
    var chart = echarts.init(chartBox, null, { renderer: "canvas" });

    function show(e) {
      if (!dialog) return;
      dialog.querySelector("pre").textContent = JSON.stringify(e, null, 2);
      dialog.showModal();
    }

    function series() {
      var byKind = { message: [], late: [], "session.note": [], boundary: [] };
      events.forEach(function (e, i) {
        var lane = laneOf(e);
        if (lanes.indexOf(lane) < 0) lanes.push(lane);
        var point = { value: [timeOf(e), lane], index: i };
        var kind = kindOf(e);
        if (kind === "message") byKind[e.late ? "late" : "message"].push(point);
        else if (kind === "session.note") byKind["session.note"].push(point);
        else byKind.boundary.push(point);
      });
      lanes.sort(function (a, b) { return (a === SESSION_LANE) - (b === SESSION_LANE) || a.localeCompare(b); });
      var marks = events.filter(function (e) { return kindOf(e) === "session.start" || kindOf(e) === "session.end"; })
        .map(function (e) { return { xAxis: timeOf(e), name: kindOf(e) === "session.start" ? "start" : "end" }; });
      function colour(p) { return COLOURS[p.value[1]] || COLOURS.other; }
      return [
        { name: "events", type: "scatter", symbolSize: 9, data: byKind.message,
          itemStyle: { color: function (p) { return colour(p.data); } },
          markLine: { symbol: "none", silent: true, label: { formatter: "{b}", position: "start" },
                      lineStyle: { type: "dashed", color: COLOURS.session }, data: marks } },
        { name: "late events", type: "scatter", symbolSize: 11, data: byKind.late,
          itemStyle: { color: "#ffffff", borderColor: "#B00020", borderWidth: 2 } },
        { name: "notes", type: "scatter", symbol: "pin", symbolSize: 22, data: byKind["session.note"],
          itemStyle: { color: "#6A3D9A" } },
        { name: "start and end", type: "scatter", symbol: "diamond", symbolSize: 14, data: byKind.boundary,
          itemStyle: { color: COLOURS.session } }
      ];
    }

    function draw() {
      var s = series();
      chart.setOption({
        animation: false,
        aria: { enabled: true, label: { description:
          "Timeline of " + events.length + " records in lanes " + lanes.join(", ") +
          ". The table below lists the same records." } },
        grid: { left: 90, right: 24, top: 24, bottom: 70 },
        legend: { bottom: 0 },
        tooltip: { trigger: "item", formatter: function (p) {
          return describe(events[p.data.index]).map(escapeHtml).join("<br>");
        } },
        xAxis: { type: "time", axisLabel: { formatter: function (v) { return clock(v); }, hideOverlap: true } },
        yAxis: { type: "category", data: lanes, inverse: true },
        dataZoom: [{ type: "inside", filterMode: "none" }, { type: "slider", filterMode: "none", bottom: 30 }],
        series: s
      }, { notMerge: true });
    }

    chart.on("click", function (p) { if (p.data && p.data.index !== undefined) show(events[p.data.index]); });
    draw();
    window.addEventListener("resize", function () { chart.resize(); });

    // Keyboard users: zoom and pan with buttons; the table rows open the same JSON.
    var zoom = { start: 0, end: 100 };
    function setZoom(start, end) {
      zoom = { start: Math.max(0, start), end: Math.min(100, end) };
      chart.dispatchAction({ type: "dataZoom", start: zoom.start, end: zoom.end });
    }
    chart.on("datazoom", function () {
      var dz = chart.getOption().dataZoom[0];
      zoom = { start: dz.start, end: dz.end };
    });
    var actions = {
      "zoom-in": function () { var c = (zoom.start + zoom.end) / 2, w = (zoom.end - zoom.start) / 4; setZoom(c - w, c + w); },
      "zoom-out": function () { var c = (zoom.start + zoom.end) / 2, w = (zoom.end - zoom.start); setZoom(c - w, c + w); },
      "pan-left": function () { var w = (zoom.end - zoom.start) / 4; if (zoom.start - w >= 0) setZoom(zoom.start - w, zoom.end - w); else setZoom(0, zoom.end - zoom.start); },
      "pan-right": function () { var w = (zoom.end - zoom.start) / 4; if (zoom.end + w <= 100) setZoom(zoom.start + w, zoom.end + w); else setZoom(100 - (zoom.end - zoom.start), 100); },
      "reset": function () { setZoom(0, 100); }
    };
    root.querySelectorAll("[data-timeline-action]").forEach(function (button) {
      button.addEventListener("click", function () { actions[button.getAttribute("data-timeline-action")](); });
    });
    root.querySelectorAll("[data-event-index]").forEach(function (row) {
      function open() { show(events[Number(row.getAttribute("data-event-index"))]); }
      row.addEventListener("click", open);
      row.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); open(); } });
    });
    if (dialog) {
      dialog.querySelector("[data-close]").addEventListener("click", function () { dialog.close(); });
    }

    return {
      chart: chart,
      // A record that arrived live: drawn with the others of the next half second (a
      // redraw per record cost the browser ~25 ms of CPU each at 2,000 events/s: bench.app).
      add: function (e) {
        events.push(e);
        if (!pending) { pending = setTimeout(function () { pending = null; draw(); }, 500); }
        return events.length - 1;
      },
      show: show
    };
  }

  window.A3CPTimeline = { mount: mount, describe: describe, timeOf: timeOf, topLabel: topLabel, clock: clock };

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.querySelector("[data-timeline]");
    var data = document.getElementById("timeline-data");
    if (root && data) window.A3CPTimeline.current = mount(root, JSON.parse(data.textContent));
  });
})();
