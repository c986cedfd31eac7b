"""Reports: info objects first (numbers), rendered second into one self-contained HTML page."""

from darwinmerge.report.browser import PageCheck, check_page, find_chromium, screenshot
from darwinmerge.report.evolution_section import evolution_curve, evolution_section
from darwinmerge.report.findings_section import findings_section
from darwinmerge.report.health_section import health_section
from darwinmerge.report.html import SECTIONS, render_page, write_report
from darwinmerge.report.info import (
    BarsInfo,
    Block,
    HeatmapInfo,
    LinesInfo,
    RowInfo,
    SectionInfo,
    TableInfo,
    TextInfo,
)
from darwinmerge.report.mri_section import mri_section
from darwinmerge.report.plots import render_png
from darwinmerge.report.prior_section import prior_section
from darwinmerge.report.recipe_section import recipe_section, revived_experts
from darwinmerge.report.results_section import results_section

__all__ = [
    "BarsInfo",
    "Block",
    "HeatmapInfo",
    "LinesInfo",
    "PageCheck",
    "RowInfo",
    "SECTIONS",
    "SectionInfo",
    "TableInfo",
    "TextInfo",
    "check_page",
    "evolution_curve",
    "evolution_section",
    "find_chromium",
    "findings_section",
    "health_section",
    "mri_section",
    "prior_section",
    "recipe_section",
    "render_page",
    "render_png",
    "results_section",
    "revived_experts",
    "screenshot",
    "write_report",
]
