import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from darwinmerge.report import (
    BarsInfo,
    HeatmapInfo,
    LinesInfo,
    SectionInfo,
    TextInfo,
    mri_section,
    render_page,
    write_report,
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var out = document.createElement('div');
  out.id = 'img-check';
  out.textContent = 'images ' + ok + '/' + imgs.length;
  document.body.appendChild(out);
});
</script></body>"""


def _images(page: str) -> list[np.ndarray]:
    out = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        out.append(imread(io.BytesIO(base64.b64decode(data)), format="png"))
    return out


def test_page_is_self_contained_and_every_plot_is_a_real_png(parent_scans):
    sa, sb, cmp = parent_scans
    sec = mri_section({"father": sa, "mother": sb}, cmp)
    page = render_page("Darwin <report>", [sec])
    assert "Darwin &lt;report&gt;" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    figures = [b for b in sec.blocks if isinstance(b, HeatmapInfo | LinesInfo | BarsInfo)]
    images = _images(page)
    assert len(images) == len(figures) == 9
    for img in images:
        assert img.shape[0] > 50 and img.shape[1] > 50
        assert img[..., :3].std() > 0.05  # not blank


def test_nan_cells_and_empty_series_render():
    sec = SectionInfo(
        "x",
        "X",
        (
            HeatmapInfo(
                "h", ("a", "b"), ("0", "1"), np.array([[np.nan, 1.0], [0.5, np.nan]]), center=0.5
            ),
            BarsInfo(
                "b",
                ("L0",),
                {"m": np.array([0.2])},
                low={"m": np.array([0.1])},
                high={"m": np.array([0.3])},
            ),
            TextInfo("plain & simple"),
        ),
    )
    page = render_page("t", [sec])
    assert len(_images(page)) == 2 and "plain &amp; simple" in page


def test_write_report_refuses_overwrite_without_force(tmp_path):
    from darwinmerge.errors import OutputExistsError

    sec = SectionInfo("x", "X", (TextInfo("hi"),))
    p = write_report(tmp_path / "r.html", "t", [sec])
    with pytest.raises(OutputExistsError, match="r.html exists"):
        write_report(p, "t", [sec], force=False)


def test_page_renders_in_headless_chromium(parent_scans, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: apt-get install -y chromium"
    sa, sb, cmp = parent_scans
    page = render_page("MRI", [mri_section({"father": sa, "mother": sb}, cmp)])
    html = tmp_path / "report.html"
    html.write_text(page.replace("</body>", _CHECK), encoding="utf-8")
    dom = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'<div id="img-check">images (\d+)/(\d+)</div>', dom)
    assert found, "the load handler did not run: " + dom[-300:]
    assert found.group(1) == found.group(2) == "9"
    assert "Probe x layer importance (BI) - mother" in dom
