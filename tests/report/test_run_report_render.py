"""The run report in headless Chromium, and `darwin report RUN --screenshot`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

from darwinmerge.report import BarsInfo, HeatmapInfo, LinesInfo, RowInfo, check_page, screenshot
from darwinmerge.run.report import run_report_sections, write_run_report

from .test_run_report import make_run

DARWIN = [sys.executable, "-m", "darwinmerge.cli"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("render") / "run")


@pytest.fixture(scope="module")
def page(run_dir: Path) -> Path:
    return write_run_report(run_dir)


def _figures(sections) -> int:
    n = 0
    for s in sections:
        for b in s.blocks:
            inner = b.blocks if isinstance(b, RowInfo) else (b,)
            n += sum(isinstance(x, HeatmapInfo | LinesInfo | BarsInfo) for x in inner)
    return n


def test_run_report_renders_with_every_image_and_no_console_error(run_dir, page):
    figures = _figures(run_report_sections(run_dir))
    assert figures == 22  # MRI 10, prior 3, evolution 2, recipe 3, health 3, results 1
    check = check_page(page)
    assert check.errors == ()
    assert check.images == figures and check.images_ok == figures
    assert check.height > 3000 and check.ok


def test_the_check_sees_a_broken_image_and_a_console_error(page, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        page.read_text().replace(
            "</body>",
            '<img alt="x" src="data:image/png;base64,AAAA">'
            "<script>console.error('boom')</script></body>",
        )
    )
    check = check_page(bad)
    assert check.images == 23 and check.images_ok == 22
    assert any("boom" in e for e in check.errors) and not check.ok


def test_screenshot_holds_the_whole_page(page, tmp_path):
    shot = tmp_path / "page.png"
    width, height = screenshot(page, shot, width=1000)
    img = imread(shot)
    assert img.shape[:2] == (height, width) and width == 1000
    assert height == check_page(page, width=1000).height > 3000
    assert img[..., :3].std() > 0.05  # not blank
    # the bottom of the page (the final table) is in the picture: not all background
    assert img[-400:, :, :3].std() > 0.02


@pytest.mark.slow
def test_darwin_report_screenshot_is_a_full_page_png(run_dir, tmp_path):
    shot = tmp_path / "x.png"
    out = tmp_path / "copy.html"
    done = subprocess.run(
        [*DARWIN, "report", str(run_dir), "--screenshot", str(shot), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and f"wrote {shot}" in done.stdout.replace("\n", "")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(shot)
    height = check_page(out).height
    assert img.shape[1] == 1200 and img.shape[0] == height > 3000
    assert shot.stat().st_size > 100_000
    assert img[..., :3].std() > 0.05  # not blank
    # again without --force: one line, nothing overwritten
    again = subprocess.run(
        [*DARWIN, "report", str(run_dir), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1 and "exists; pass --force" in again.stderr


def test_missing_chromium_is_one_line_with_the_install_hint(run_dir, tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no chromium on PATH
    done = subprocess.run(
        [*DARWIN, "report", str(run_dir), "--screenshot", str(tmp_path / "y.png")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "apt-get install chromium" in lines[0]
    assert not (tmp_path / "y.png").exists()
