"""The prior section: the search's start (``RUN/prior.json``) -> SectionInfo.

The start genome in unit space with its step size (sigma) and search box per gene, the
decoded value of every gene, the reason the MRI gave for it, and the start genome's
recipe drawn like the final one (see :mod:`darwinmerge.report.recipe_section`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from darwinmerge.report.html import SECTIONS
from darwinmerge.report.info import BarsInfo, Block, SectionInfo, TableInfo, TextInfo

__all__ = ["PRIOR_CHART_TITLE", "prior_section"]

PRIOR_CHART_TITLE = "Start genome (unit space): mean, +/- sigma"


def _f(x: Any, digits: int = 3) -> str:
    if isinstance(x, str):
        return x
    if x is None or not np.isfinite(float(x)):
        return "n/a"
    return f"{float(x):.{digits}f}"


@SECTIONS.register("prior")
def prior_section(payload: Mapping[str, Any], recipe_blocks: Sequence[Block] = ()) -> SectionInfo:
    """Info for the prior section; ``recipe_blocks``: the start recipe drawn (optional)."""
    genes = list(payload.get("genes") or [])
    decoded = dict(payload.get("decoded") or {})
    kind = payload.get("kind", "?")
    target = payload.get("target")
    names = tuple(str(g["name"]) for g in genes)
    mean = np.array([float(g["mean"]) for g in genes])
    sigma = np.array([float(g["sigma"]) for g in genes])
    lower = np.array([float(g["lower"]) for g in genes])
    upper = np.array([float(g["upper"]) for g in genes])
    how = (
        "from the MRI scans of both parents" + (f", toward {target}" if target else "")
        if kind == "mri"
        else "blind (mean 0.5, sigma 1/6 in every gene, as the published searches start)"
    )
    blocks: list[Block] = [
        TextInfo(
            f"The search ({payload.get('space', 'genome')} space, {len(genes)} genes) starts {how}."
        )
    ]
    extra = {k: v for k, v in decoded.items() if k not in names}
    for k, v in extra.items():
        blocks.append(TextInfo(f"Start, decoded ({k}): {v}"))
    if genes:
        blocks.append(
            BarsInfo(
                PRIOR_CHART_TITLE,
                names,
                {"start": mean},
                low={"start": np.clip(mean - sigma, lower, upper)},
                high={"start": np.clip(mean + sigma, lower, upper)},
                ylim=(0.0, 1.0),
                ylabel="unit value",
                xlabel="gene",
                caption="Bars: the start value of each gene in [0, 1]; whiskers: one step size "
                "either side, clipped to the gene's search box.",
            )
        )
        blocks.append(
            TableInfo(
                "Genes: start and why",
                ("gene", "start", "decoded", "sigma", "box", "reason"),
                tuple(
                    (
                        str(g["name"]),
                        _f(g["mean"]),
                        _f(decoded.get(str(g["name"]), "-")),
                        _f(g["sigma"]),
                        f"[{_f(g['lower'], 2)}, {_f(g['upper'], 2)}]",
                        str(g.get("reason", "")),
                    )
                    for g in genes
                ),
            )
        )
    blocks.extend(recipe_blocks)
    return SectionInfo("prior", "Prior: where the search starts", tuple(blocks))
