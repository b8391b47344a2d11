"""Chromium through Playwright for bench.app, and the scripts that take the figures in
the page, on its own clock."""

from typing import Any

from playwright.sync_api import Browser, Page

from bench.app.serve import TOKEN

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
