"""Info objects: the numbers a report shows, computed before anything is drawn.

A :class:`SectionInfo` (one per phase) holds an ordered list of blocks; each block is a
small frozen dataclass of plain numbers and labels. Tests assert on these; rendering
(:mod:`darwinmerge.report.plots`, :mod:`darwinmerge.report.html`) comes second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Block",
    "BarsInfo",
    "HeatmapInfo",
    "LinesInfo",
    "RowInfo",
    "SectionInfo",
    "TableInfo",
    "TextInfo",
]


@dataclass(frozen=True)
class HeatmapInfo:
    """``values`` [rows, cols]; ``center`` set -> diverging colours around it."""

    title: str
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    values: np.ndarray
    colorbar: str = ""
    center: float | None = None
    xlabel: str = "layer"
    caption: str = ""
    vrange: tuple[float, float] | None = None  # fixed colour range (else from the data)


@dataclass(frozen=True)
class LinesInfo:
    """One line per series over a shared x axis; series named in ``points`` are drawn
    as markers only (no connecting line)."""

    title: str
    x: tuple[int, ...]
    series: dict[str, np.ndarray]
    ylabel: str = ""
    xlabel: str = "layer"
    caption: str = ""
    points: tuple[str, ...] = ()


@dataclass(frozen=True)
class BarsInfo:
    """Bars with optional intervals (``low`` / ``high``), one group per series."""

    title: str
    labels: tuple[str, ...]
    series: dict[str, np.ndarray]
    low: dict[str, np.ndarray] = field(default_factory=dict)
    high: dict[str, np.ndarray] = field(default_factory=dict)
    ylim: tuple[float, float] | None = None
    ylabel: str = ""
    xlabel: str = "layer"
    caption: str = ""


@dataclass(frozen=True)
class TableInfo:
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class TextInfo:
    text: str


@dataclass(frozen=True)
class RowInfo:
    """Blocks shown next to each other (e.g. the two parents' maps side by side)."""

    title: str
    blocks: tuple[HeatmapInfo | LinesInfo | BarsInfo | TableInfo | TextInfo, ...]


Block = HeatmapInfo | LinesInfo | BarsInfo | TableInfo | TextInfo | RowInfo


@dataclass(frozen=True)
class SectionInfo:
    """One report section (one phase)."""

    phase: str
    title: str
    blocks: tuple[Block, ...]

    def find(self, title: str) -> Block:
        for block in self.blocks:
            if getattr(block, "title", None) == title:
                return block
            for inner in block.blocks if isinstance(block, RowInfo) else ():
                if getattr(inner, "title", None) == title:
                    return inner
        raise KeyError(f"no block titled {title!r} in section {self.title!r}")
