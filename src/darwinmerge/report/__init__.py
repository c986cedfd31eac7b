"""Reports: info objects first (numbers), rendered second into one self-contained HTML page."""

from darwinmerge.report.health_section import health_section
from darwinmerge.report.html import SECTIONS, render_page, write_report
from darwinmerge.report.info import (
    BarsInfo,
    Block,
    HeatmapInfo,
    LinesInfo,
    SectionInfo,
    TableInfo,
    TextInfo,
)
from darwinmerge.report.mri_section import mri_section
from darwinmerge.report.plots import render_png

__all__ = [
    "BarsInfo",
    "Block",
    "HeatmapInfo",
    "LinesInfo",
    "SECTIONS",
    "SectionInfo",
    "TableInfo",
    "TextInfo",
    "health_section",
    "mri_section",
    "render_page",
    "render_png",
    "write_report",
]
