"""``darwin report RUN [--out FILE.html] [--screenshot FILE.png]``: (re)write a run's
self-contained HTML report and, optionally, a full-page screenshot of it (headless
Chromium)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from darwinmerge.errors import OutputExistsError

__all__ = ["register", "report_command"]


def report_command(
    run: Annotated[Path, typer.Argument(help="A `darwin run` folder.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the page here (default RUN/report.html)."),
    ] = None,
    screenshot: Annotated[
        Path | None,
        typer.Option(
            "--screenshot", help="Also save a full-page PNG of the report (needs chromium)."
        ),
    ] = None,
    width: Annotated[
        int, typer.Option(min=400, max=4000, help="Screenshot width in pixels.")
    ] = 1200,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing --out / --screenshot file.")
    ] = False,
) -> None:
    """Write a run's HTML report (and optionally a full-page screenshot).

    Findings first, then the MRI, prior, evolution, recipe, health and final scores."""
    from rich.console import Console

    from darwinmerge.report.browser import find_chromium
    from darwinmerge.report.browser import screenshot as take_screenshot
    from darwinmerge.run.report import REPORT_FILE, write_run_report

    console = Console()
    for path in (out, screenshot):
        if path is not None and path.exists() and not force:
            raise OutputExistsError(f"{path} exists; pass --force to overwrite it")
    exe = find_chromium() if screenshot is not None else None  # fail before the work
    page = write_run_report(run, out=out if out is not None else run / REPORT_FILE)
    console.print(f"wrote {page}")
    if screenshot is not None:
        w, h = take_screenshot(page, screenshot, width=width, chromium=exe)
        console.print(f"wrote {screenshot} ({w} x {h} px)")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
