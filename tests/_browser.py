"""Render an HTML report in headless Chromium and measure it (used by test_report_browser.py).

Chromium is driven through its command line only (``--dump-dom``, ``--screenshot``), so
nothing is downloaded at run time: the Debian package ``chromium`` is enough. A script
injected at the top of a copy of the page records errors (``window.onerror``, resources that
fail to load, ``console.error``) and, once the page has loaded, the document's
``scrollWidth`` (as the page opens, and with every ``<details>`` opened), each image's natural
size and the elements that stick out past the page's text column with everything opened (a
table scrolling inside its box counts); it writes them into
the DOM that ``--dump-dom`` prints.

Usage by hand (screenshots of the cpu demo's report)::

    python tests/_browser.py cgni_demo/report.html --screenshot /tmp/shot.png
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window && t.tagName ? "failed to load <" + t.tagName.toLowerCase() + "> "
                       + String(t.alt || t.src || "").slice(0, 80) : String(e.message));
}, true);
(function () {
  var err = console.error;
  console.error = function () {
    window.__errors.push(Array.prototype.join.call(arguments, " "));
    return err.apply(console, arguments);
  };
})();
window.addEventListener("load", function () {
  var root = document.documentElement, width = root.clientWidth;
  var closed = root.scrollWidth, height = root.scrollHeight;
  // then every <details> opened: a folded table must fit the page too
  Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) { d.open = true; });
  var body = document.body.getBoundingClientRect(), style = getComputedStyle(document.body);
  var limit = Math.min(width, body.right - parseFloat(style.paddingRight));
  var out = {
    scrollWidth: Math.max(closed, root.scrollWidth), scrollWidthFolded: closed, clientWidth: width,
    scrollHeight: height, details: document.querySelectorAll("details").length,
    images: Array.prototype.map.call(document.images, function (i) {
      return {alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight};
    }),
    // past the page's text column (or the window), even where a scrolling container would hide it
    overflowing: Array.prototype.filter.call(document.body.querySelectorAll("*"), function (el) {
      return el.getBoundingClientRect().right > limit + 0.5;
    }).slice(0, 20).map(function (el) { return el.tagName + " " + (el.textContent || "").slice(0, 60); }),
    errors: window.__errors
  };
  var pre = document.createElement("pre");
  pre.id = "__probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium():
    """The path of an installed Chromium or Chrome, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser, args, timeout):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", "--disable-extensions", "--allow-file-access-from-files", *args]
    env = {**os.environ, "HOME": os.environ.get("HOME", tempfile.gettempdir())}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def probe(report, *, width=1400, height=1000, screenshot=None, browser=None, timeout=120):
    """Load ``report`` in headless Chromium at ``width`` pixels and return what the injected probe measured.

    Returns
    -------
    result : dict
        ``scrollWidth`` (the larger of the page as it opens and with every ``<details>`` open),
        ``scrollWidthFolded``, ``clientWidth``, ``scrollHeight``, ``details``, ``images`` (``alt``, ``complete``,
        ``naturalWidth``, ``naturalHeight``), ``overflowing`` (elements past the text column),
        ``errors`` (JS errors, failed resources, ``console.error``) and ``console`` (console
        messages of level error that Chromium logged).
    """
    browser = browser or find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium found (install the Debian package 'chromium').")
    text = Path(report).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(text.replace("<head>", "<head>" + _PROBE, 1))
        profile = Path(tmp) / "profile"
        res = _run(browser, [f"--user-data-dir={profile}", f"--window-size={width},{height}",
                             "--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0", "--dump-dom",
                             page.as_uri()], timeout)
        m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
        if m is None:
            raise RuntimeError(f"the probe did not report (exit {res.returncode}): {res.stderr[-2000:]}")
        import html

        out = json.loads(html.unescape(m.group(1)))
        out["console"] = [line for line in res.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()
                          and "page.html" in line]
        if screenshot:
            full = min(int(out["scrollHeight"]), 30000)
            _run(browser, [f"--user-data-dir={profile}", f"--window-size={width},{full}",
                           f"--screenshot={Path(screenshot).resolve()}", page.as_uri()], timeout)
    return out


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--screenshot")
    a = ap.parse_args()
    r = probe(a.report, width=a.width, screenshot=a.screenshot)
    print(json.dumps({k: v for k, v in r.items() if k != "images"}, indent=1))
    print(f"{len(r['images'])} images, {sum(i['naturalWidth'] > 0 for i in r['images'])} decoded", file=sys.stderr)
