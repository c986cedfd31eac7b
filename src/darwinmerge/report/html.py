"""Render section info objects into ONE self-contained HTML page (PNG plots inlined as
base64 data URIs, inline CSS, no scripts, no external files)."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from darwinmerge.atomic import write_text_atomic
from darwinmerge.errors import OutputExistsError
from darwinmerge.registry import Registry
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
from darwinmerge.report.plots import render_png

__all__ = ["SECTIONS", "render_page", "write_report"]

#: Section builders, one per phase: name -> callable returning a :class:`SectionInfo`.
SECTIONS: Registry[Callable[..., SectionInfo]] = Registry("report section")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #aaa}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
nav a{margin-right:1em}
.row{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1em;
align-items:start}
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _figure(info: HeatmapInfo | LinesInfo | BarsInfo) -> str:
    data = base64.b64encode(render_png(info)).decode("ascii")
    cap = f"<figcaption>{_esc(info.caption)}</figcaption>" if info.caption else ""
    return (
        f'<figure><img alt="{_esc(info.title)}" src="data:image/png;base64,{data}">{cap}</figure>'
    )


def _table(info: TableInfo) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in info.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in info.rows
    )
    cap = f"<caption>{_esc(info.title)}</caption>"
    note = f"<p class='caption'>{_esc(info.caption)}</p>" if info.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _block(block: Block) -> str:
    if isinstance(block, TextInfo):
        return f"<p>{_esc(block.text)}</p>"
    if isinstance(block, TableInfo):
        return _table(block)
    if isinstance(block, RowInfo):
        return "<div class='row'>" + "".join(_block(b) for b in block.blocks) + "</div>"
    return _figure(block)


def render_page(
    title: str, sections: Sequence[SectionInfo], *, meta: dict[str, Any] | None = None
) -> str:
    """The full HTML document for ``sections`` (in the given order)."""
    nav = "".join(f'<a href="#{_esc(s.phase)}">{_esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1><nav>{nav}</nav>",
    ]
    if meta:
        rows = "".join(
            f"<tr><td>{_esc(str(k))}</td><td>{_esc(str(v))}</td></tr>" for k, v in meta.items()
        )
        parts.append(f"<table><tbody>{rows}</tbody></table>")
    for section in sections:
        parts.append(f'<section id="{_esc(section.phase)}"><h2>{_esc(section.title)}</h2>')
        parts.extend(_block(b) for b in section.blocks)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    path: str | Path,
    title: str,
    sections: Sequence[SectionInfo],
    *,
    meta: dict[str, Any] | None = None,
    force: bool = True,
) -> Path:
    """Write the page to ``path`` (refuses to overwrite unless ``force``)."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; pass force to overwrite it")
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(p, render_page(title, sections, meta=meta))
    return p
