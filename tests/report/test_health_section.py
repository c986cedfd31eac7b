"""The health section: info object first (numbers from the verdict), then the page."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from darwinmerge.health import health_check
from darwinmerge.report import (
    SECTIONS,
    BarsInfo,
    HeatmapInfo,
    LinesInfo,
    TableInfo,
    TextInfo,
    health_section,
    render_page,
)

from ..health.scans import MID, A, B, make_scan, trio
from .test_html import _CHECK, CHROMIUM_FLAGS, _images


@pytest.fixture
def verdict():
    child = MID.copy()
    child[0, 2] = 0.40  # interference
    child[1, 3] = 0.05  # function loss
    uc = np.ones((4, 4))
    uc[1, 2] = 0.0  # died (alive in both parents)
    # REASONING worse than both parents (1.2 > 1.05): the loss evidence a died expert needs
    return health_check(
        make_scan(child, name="child", util=uc, loss=np.array([1.2, 1.0])),
        make_scan(A, name="father", util=np.ones((4, 4))),
        make_scan(B, name="mother", util=np.ones((4, 4))),
    )


def test_section_info_holds_the_verdict_numbers(verdict):
    sec = health_section(verdict)
    assert SECTIONS.get("health") is health_section
    assert sec.phase == "health"
    assert isinstance(sec.blocks[0], TextInfo) and sec.blocks[0].text == verdict.summary
    chart = sec.find("Child vs parents: importance per layer")
    assert isinstance(chart, BarsInfo)
    child = np.asarray(verdict.bi_child).mean(0)
    np.testing.assert_allclose(chart.series["child"], child, rtol=1e-12)
    np.testing.assert_allclose(chart.low["child"], np.minimum(A.mean(0), B.mean(0)), rtol=1e-12)
    np.testing.assert_allclose(chart.high["child"], np.maximum(A.mean(0), B.mean(0)), rtol=1e-12)
    assert "Flagged layers: L2, L3." in chart.caption
    lines = sec.find("Importance per layer: child, parent A, parent B")
    assert isinstance(lines, LinesInfo)
    np.testing.assert_allclose(lines.series["parent B"], B.mean(0), rtol=1e-12)
    heat = sec.find("Flag strength (probe x layer)")
    assert isinstance(heat, HeatmapInfo) and heat.center == 0.0
    assert heat.values[0, 2] == pytest.approx(0.18 / 0.055, rel=1e-9)
    assert heat.values[1, 3] == pytest.approx(-0.28 / 0.165, rel=1e-9)
    flags = sec.find("Flagged layers")
    assert isinstance(flags, TableInfo)
    assert [r[:3] for r in flags.rows] == [
        ("L2", "REASONING", "interference"),
        ("L3", "CODE", "function loss"),
    ]
    assert flags.rows[0][-1] == f"{0.18 / 0.055:.2f}"
    routing = sec.find("Routing changes")
    assert routing.rows == (("L1", "experts died", "0.250", "0.000", "0.000", "2", "A", "yes"),)
    pres = sec.find("Prescription")
    assert [r[0] for r in pres.rows] == [c.describe() for c in verdict.prescription]
    assert len(pres.rows) == 2  # upstream first: L2 only (L3 is re-checked later), revive
    thr = dict(sec.find("Thresholds").rows)
    assert thr["interference_rel"] == "0.25" and thr["material"] == "0.05"


def test_healthy_verdict_has_no_routing_table_and_empty_flags():
    sec = health_section(health_check(*trio(MID, A, B)))
    assert sec.find("Flagged layers").rows == ()
    with pytest.raises(KeyError):
        sec.find("Routing changes")
    assert "Flagged layers: none." in sec.find("Child vs parents: importance per layer").caption
    # near-zero strengths: no map (its colour scale would follow the noise), a sentence
    with pytest.raises(KeyError):
        sec.find("Flag strength (probe x layer)")
    peak = np.abs(np.asarray(health_check(*trio(MID, A, B)).strength)).max()
    assert any(
        isinstance(b, TextInfo) and f"within {peak:.2f} margins" in b.text for b in sec.blocks
    )


def test_page_holds_the_chart_as_real_pngs(verdict):
    page = render_page("Health", [health_section(verdict)])
    assert "Child health check" in page and "<script" not in page
    assert 'alt="Child vs parents: importance per layer"' in page
    images = _images(page)
    assert len(images) == 3
    for img in images:
        assert img.shape[0] > 50 and img[..., :3].std() > 0.05


def test_health_page_renders_in_headless_chromium(verdict, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: apt-get install -y chromium"
    html = tmp_path / "report.html"
    page = render_page("Health", [health_section(verdict)])
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
    assert found.group(1) == found.group(2) == "3"
