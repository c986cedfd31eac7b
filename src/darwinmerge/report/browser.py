"""A report page in headless Chromium: load check and full-page screenshot.

:func:`check_page` opens a copy of the page with a small checker script added (the page
itself has no scripts): it records page errors, ``console.error`` / ``console.warn``
calls and failed resource loads, and, once the page has loaded, counts the images that
decoded (``naturalWidth > 0``) and the page's full height; ``--dump-dom`` brings the
answer back. Any console message Chromium logs for the page counts as an error too.
:func:`screenshot` sizes the window to that height and takes one screenshot, so the PNG
holds the whole page.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from darwinmerge.atomic import replace_file
from darwinmerge.errors import EvaluationError, MissingDependencyError

__all__ = ["CHROMIUM_FLAGS", "PageCheck", "check_page", "find_chromium", "screenshot"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
#: The tallest screenshot taken (pixels); a longer page is cut there.
MAX_HEIGHT = 32000

_HEAD = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target !== window ? (e.target.tagName || 'resource') + ' failed to load'
    : String(e.message);
  window.__errors.push(t);
}, true);
['error', 'warn'].forEach(function (k) {
  var orig = console[k];
  console[k] = function () {
    window.__errors.push(k + ': ' + Array.prototype.join.call(arguments, ' '));
    orig.apply(console, arguments);
  };
});
</script>"""

_TAIL = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var h = Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);
  var out = document.createElement('pre');
  out.id = 'darwin-check';
  out.textContent = 'images ' + ok + '/' + imgs.length + ' height ' + h + ' errors ' +
    window.__errors.length + '\\n' + window.__errors.join('\\n');
  document.body.appendChild(out);
});
</script>"""

_ANSWER = re.compile(
    r'<pre id="darwin-check">images (\d+)/(\d+) height (\d+) errors (\d+)\n?(.*?)</pre>', re.S
)


@dataclass(frozen=True)
class PageCheck:
    """``images_ok`` of ``images`` decoded; ``height`` of the page at the window width
    (CSS pixels); ``errors``: page errors, console errors/warnings, failed loads and any
    console line Chromium logged."""

    images_ok: int
    images: int
    height: int
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.images_ok == self.images and not self.errors


def find_chromium() -> str:
    """The Chromium executable, or a one-line error saying how to install it."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise MissingDependencyError(
        "headless Chromium is needed for this (not found on PATH); install it: "
        "apt-get install chromium"
    )


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EvaluationError(f"Chromium did not finish within {timeout:.0f} s") from exc


def check_page(
    html: str | Path, *, width: int = 1200, timeout: float = 120.0, chromium: str | None = None
) -> PageCheck:
    """Open ``html`` in headless Chromium at ``width`` and report what loaded."""
    exe = chromium or find_chromium()
    page = Path(html).read_text(encoding="utf-8")
    if "</body>" not in page:
        raise EvaluationError(f"{html}: not an HTML page (no </body>)")
    head = page.replace("</head>", _HEAD + "</head>", 1) if "</head>" in page else _HEAD + page
    probe = head.replace("</body>", _TAIL + "</body>", 1)
    with tempfile.TemporaryDirectory(prefix="darwin-chromium-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(probe, encoding="utf-8")
        proc = _run(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--window-size={width},900",
                "--virtual-time-budget=5000",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                copy.as_uri(),
            ],
            timeout,
        )
    found = _ANSWER.search(proc.stdout)
    if not found:
        raise EvaluationError(
            f"Chromium did not load {html} (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
        )
    errors = [e for e in found.group(5).strip().splitlines() if e]
    errors += [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return PageCheck(int(found.group(1)), int(found.group(2)), int(found.group(3)), tuple(errors))


def screenshot(
    html: str | Path,
    png: str | Path,
    *,
    width: int = 1200,
    timeout: float = 120.0,
    chromium: str | None = None,
) -> tuple[int, int]:
    """A full-page PNG of ``html`` at ``width`` (height measured first, at most
    :data:`MAX_HEIGHT`); returns the (width, height) of the screenshot."""
    exe = chromium or find_chromium()
    check = check_page(html, width=width, timeout=timeout, chromium=exe)
    height = max(200, min(check.height, MAX_HEIGHT))
    out = Path(png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_png = out.with_name(f".{out.name}.tmp.png")
    with tempfile.TemporaryDirectory(prefix="darwin-chromium-") as tmp:
        proc = _run(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--window-size={width},{height}",
                "--virtual-time-budget=5000",
                f"--screenshot={tmp_png}",
                Path(html).resolve().as_uri(),
            ],
            timeout,
        )
    if not tmp_png.is_file() or tmp_png.stat().st_size == 0:
        raise EvaluationError(
            f"Chromium wrote no screenshot of {html} (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-300:]}"
        )
    replace_file(tmp_png, out)
    return width, height
