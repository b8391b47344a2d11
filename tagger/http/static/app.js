// The app's small script: local times, and an active session's page kept up to date
// from its server-sent events (the timeline, the event table, the count, the notes).
(function () {
  "use strict";

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var ms = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(ms)) { t.title = t.textContent; t.textContent = new Date(ms).toLocaleString(); }
    });
  }

  function cell(text) { var td = document.createElement("td"); td.textContent = text == null ? "" : String(text); return td; }

  function follow(url) {
    var T = window.A3CPTimeline, table = document.querySelector("[data-live='events']");
    var count = document.querySelector("[data-live='count']"), last = document.querySelector("[data-live='last']");
    var notes = document.querySelector("[data-live='notes']");
    var source = new EventSource(url);
    function add(e) {
      var index = T && T.current ? T.current.add(e) : -1;
      var kind = e.kind || "message";
      var row = document.createElement("tr");
      row.className = "mark"; row.tabIndex = 0; row.setAttribute("data-event-index", String(index));
      var when = document.createElement("td"), time = document.createElement("time");
      var stamp = kind === "session.start" ? e.start_time : kind === "session.end" ? e.end_time : e.timestamp;
      time.setAttribute("datetime", stamp); time.textContent = new Date(Date.parse(stamp)).toLocaleString();
      when.appendChild(time); row.appendChild(when);
      row.appendChild(cell(kind === "message" ? "event" : kind));
      row.appendChild(cell(e.modality)); row.appendChild(cell(e.source)); row.appendChild(cell(e.performer_id));
      row.appendChild(cell(kind === "message" ? (T ? T.topLabel(e.classifier_output).split(" ")[0] : "") : (e.note || e.close_reason || "")));
      row.appendChild(cell(e.session_seq));
      row.addEventListener("click", function () { T.current.show(e); });
      row.addEventListener("keydown", function (ev) { if (ev.key === "Enter") T.current.show(e); });
      if (table) table.appendChild(row);
      if (kind === "message" && count) count.textContent = String(Number(count.textContent) + 1);
      if (kind === "message" && last) last.textContent = new Date(Date.parse(e.timestamp)).toLocaleString();
      if (kind === "session.note" && notes) {
        var empty = notes.querySelector("[data-empty]"); if (empty) empty.remove();
        var li = document.createElement("li"); li.textContent = new Date(Date.parse(e.timestamp)).toLocaleString() + " " + e.performer_id + ": " + e.note;
        notes.appendChild(li);
      }
      if (kind === "session.end") { source.close(); }
    }
    ["message", "session.note", "session.end", "session.start"].forEach(function (name) {
      source.addEventListener(name, function (ev) { add(JSON.parse(ev.data)); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var live = document.querySelector("[data-live-url]");
    if (live) follow(live.getAttribute("data-live-url"));
  });
})();
