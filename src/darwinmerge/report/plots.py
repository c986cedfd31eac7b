"""Render figure info objects to PNG bytes with matplotlib's Agg canvas (no pyplot state)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from darwinmerge.report.info import BarsInfo, HeatmapInfo, LinesInfo

__all__ = ["render_png"]

_DPI = 100


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _ticks(n: int, limit: int = 24) -> list[int]:
    step = max(1, int(np.ceil(n / limit)))
    return list(range(0, n, step))


def _heatmap(info: HeatmapInfo) -> Figure:
    rows, cols = info.values.shape
    fig = Figure(figsize=(min(2.0 + 0.35 * cols, 14.0), 1.2 + 0.35 * rows))
    ax = fig.add_subplot()
    vals = np.ma.masked_invalid(np.asarray(info.values, dtype=float))
    if info.center is not None:
        finite = np.abs(vals.compressed() - info.center) if vals.count() else np.array([1.0])
        span = float(finite.max())
        if span <= 1e-9 * max(1.0, abs(info.center)):  # every cell at the centre
            span = max(1.0, abs(info.center)) / 2
        low, high = info.vrange or (info.center - span, info.center + span)
        norm = TwoSlopeNorm(info.center, low, high)
        im = ax.imshow(vals, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
    else:
        vmin, vmax = info.vrange if info.vrange is not None else (None, None)
        im = ax.imshow(
            vals, aspect="auto", cmap="magma", interpolation="nearest", vmin=vmin, vmax=vmax
        )
    ax.set_yticks(range(rows), info.row_labels)
    ticks = _ticks(cols)
    ax.set_xticks(ticks, [info.col_labels[i] for i in ticks])
    ax.set_xlabel(info.xlabel)
    ax.set_title(info.title)
    fig.colorbar(im, ax=ax, label=info.colorbar, fraction=0.04)
    return fig


def _lines(info: LinesInfo) -> Figure:
    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    for name, ys in info.series.items():
        style = "none" if name in info.points else "-"
        ax.plot(
            info.x,
            ys,
            marker="o",
            markersize=4 if style == "none" else 3,
            linestyle=style,
            label=name,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(info.xlabel)
    ax.set_ylabel(info.ylabel)
    ax.set_title(info.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _bars(info: BarsInfo) -> Figure:
    n = len(info.labels)
    k = max(len(info.series), 1)
    fig_w = min(3 + 0.3 * n * k, 14)
    fig = Figure(figsize=(fig_w, 3.2))
    ax = fig.add_subplot()
    width = 0.8 / k
    x = np.arange(n)
    for i, (name, ys) in enumerate(info.series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        err = None
        if name in info.low and name in info.high:
            err = np.stack([ys - info.low[name], info.high[name] - ys]).clip(min=0)
        ax.bar(pos, ys, width, yerr=err, capsize=2, label=name)
    ticks = _ticks(n)
    # rotate when the longest label (about 0.09 in a character) is wider than its slot
    longest = max((len(info.labels[i]) for i in ticks), default=0)
    crowded = longest * 0.09 > 0.9 * (fig_w - 1) / max(len(ticks), 1)
    ax.set_xticks(
        ticks,
        [info.labels[i] for i in ticks],
        rotation=45 if crowded else 0,
        ha="right" if crowded else "center",
    )
    ax.set_xlabel(info.xlabel)
    ax.set_ylabel(info.ylabel)
    ax.set_title(info.title)
    ax.grid(alpha=0.3, axis="y")
    if info.ylim is not None:
        ax.set_ylim(*info.ylim)
    if len(info.series) > 1:
        ax.legend(fontsize=8)
    return fig


def render_png(info: HeatmapInfo | LinesInfo | BarsInfo) -> bytes:
    """PNG bytes of one figure info object."""
    if isinstance(info, HeatmapInfo):
        return _png(_heatmap(info))
    if isinstance(info, LinesInfo):
        return _png(_lines(info))
    return _png(_bars(info))
