"""The MRI report section: scans (and a parent comparison / weight scan) -> SectionInfo."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from darwinmerge.mri.compare import ComparisonScan
from darwinmerge.mri.scan import Scan
from darwinmerge.mri.weights import WeightScan
from darwinmerge.report.html import SECTIONS
from darwinmerge.report.info import (
    BarsInfo,
    Block,
    HeatmapInfo,
    LinesInfo,
    SectionInfo,
    TableInfo,
    TextInfo,
)

__all__ = ["mri_section"]


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _summary(scans: Mapping[str, Scan]) -> TableInfo:
    rows = []
    for name, s in scans.items():
        moe = s.is_moe
        worst = int(np.argmax(s.dead_fraction)) if moe else -1
        rows.append(
            (
                name,
                s.family,
                str(s.num_layers),
                f"{s.num_experts} (top {s.top_k})" if moe else "dense",
                _fmt(float(np.mean(s.loss))),
                _fmt(float(np.mean(s.router_entropy))) if moe else "-",
                _fmt(float(np.mean(s.dead_fraction))) if moe else "-",
                (
                    f"L{s.sparse_layers[worst]}: {_fmt(s.dead_fraction[worst], 2)} "
                    f"[{_fmt(s.dead_interval[worst, 0], 2)}, {_fmt(s.dead_interval[worst, 1], 2)}]"
                )
                if moe
                else "-",
            )
        )
    return TableInfo(
        "Summary",
        (
            "model",
            "family",
            "layers",
            "experts",
            "probe loss",
            "router entropy",
            "dead fraction (mean)",
            "worst layer [95% CI]",
        ),
        tuple(rows),
        caption="Probe loss: mean next-token loss averaged over categories. Router entropy: "
        "per-token entropy / log E, mean over layers.",
    )


def _layer_labels(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n))


@SECTIONS.register("mri")
def mri_section(
    scans: Mapping[str, Scan],
    comparison: ComparisonScan | None = None,
    weights: WeightScan | None = None,
) -> SectionInfo:
    """Info for the MRI section: one importance heatmap per model, importance per layer
    for all models, expert utilisation and dead experts for MoE models, and, when given,
    the advantage / swap maps and the weight-space deltas."""
    blocks: list[Block] = [_summary(scans)]
    for name, s in scans.items():
        blocks.append(
            HeatmapInfo(
                f"Probe x layer importance (BI) - {name}",
                tuple(s.categories),
                _layer_labels(s.num_layers),
                s.bi,
                colorbar="BI = 1 - mean cos(x_l, x_l+1)",
                caption="Block Influence per probe category: 1 minus the mean cosine between "
                "a layer's input and output over real tokens.",
            )
        )
    first = next(iter(scans.values()))
    blocks.append(
        LinesInfo(
            "Importance per layer",
            tuple(range(first.num_layers)),
            {name: s.bi_all for name, s in scans.items()},
            ylabel="BI (all probes)",
        )
    )
    moe = {n: s for n, s in scans.items() if s.is_moe}
    for name, s in moe.items():
        blocks.append(
            HeatmapInfo(
                f"Expert utilisation - {name}",
                tuple(f"L{i}" for i in s.sparse_layers),
                tuple(str(e) for e in range(s.num_experts)),
                s.utilisation,
                colorbar="u = routed / fair share",
                center=1.0,
                xlabel="expert",
                caption="1.0 is a fair share (tokens x top_k / E). Ties at the k-th place are "
                "shared equally among the tied experts.",
            )
        )
    if moe:
        labels = tuple(f"L{i}" for i in first.sparse_layers)
        blocks.append(
            BarsInfo(
                "Dead experts per layer",
                labels,
                {n: s.dead_fraction for n, s in moe.items()},
                low={n: s.dead_interval[:, 0] for n, s in moe.items()},
                high={n: s.dead_interval[:, 1] for n, s in moe.items()},
                ylabel="dead fraction",
                ylim=(0.0, 1.0),
                caption=f"Dead: utilisation below {first.dead_threshold:g} x fair share. Bars: "
                f"{int(first.bootstrap['level'] * 100)}% bootstrap interval over probe "
                f"sequences ({first.bootstrap['resamples']} resamples).",
            )
        )
        blocks.append(
            LinesInfo(
                "Router entropy per layer",
                tuple(first.sparse_layers),
                {
                    **{f"{n} per token": s.router_entropy for n, s in moe.items()},
                    **{f"{n} load": s.load_entropy for n, s in moe.items()},
                },
                ylabel="entropy / log E",
            )
        )
    if comparison is not None:
        blocks.extend(_comparison_blocks(comparison))
    if weights is not None:
        blocks.extend(_weight_blocks(weights))
    return SectionInfo("mri", "Model MRI", tuple(blocks))


def _comparison_blocks(c: ComparisonScan) -> list[Block]:
    layers = _layer_labels(c.num_layers)
    out: list[Block] = [
        HeatmapInfo(
            f"Advantage map BI(A) - BI(B)   A={c.model_a}  B={c.model_b}",
            tuple(c.categories),
            layers,
            c.advantage,
            colorbar="BI_A - BI_B",
            center=0.0,
            caption="Cheap proxy: positive where A's layer transforms its input more than B's.",
        )
    ]
    if np.isfinite(c.swap_advantage).any():
        out.append(
            HeatmapInfo(
                "Swap-scan advantage of A over B",
                tuple(c.categories),
                layers,
                c.swap_advantage,
                colorbar="(dloss A<-B_l - dloss B<-A_l) / 2",
                center=0.0,
                caption="Causal: loss change when layer l of A is replaced by B's, minus the "
                "reverse, halved. Positive: A's layer is the better one for that category.",
            )
        )
        for part, label in (("attention", "attention"), ("ffn", "FFN (router + experts)")):
            swaps = c.part_swaps(part)
            if swaps is None or not np.isfinite(swaps[0]).any():
                continue
            out.append(
                HeatmapInfo(
                    f"Swap-scan advantage of A over B, {label} alone",
                    tuple(c.categories),
                    layers,
                    (swaps[0] - swaps[1]) / 2,
                    colorbar="(dloss A<-B - dloss B<-A) / 2",
                    center=0.0,
                    caption=f"The same with only the {label} tensors of layer l swapped (norms "
                    "stay). Where this map and the whole-layer map differ, the components "
                    "carry different skills: the prior's per-component genes read it.",
                )
            )
        rho = ", ".join(
            f"{cat} {_fmt(r, 2)}" for cat, r in zip(c.categories, c.agreement_spearman, strict=True)
        )
        out.append(
            TextInfo(
                f"Agreement of the advantage map with the swap scan: sign agreement "
                f"{_fmt(c.agreement_sign, 2)} of cells; Spearman over layers per category: {rho}."
            )
        )
        rows = tuple(
            (
                cat,
                _fmt(c.loss_a[i]),
                _fmt(c.loss_b[i]),
                f"L{int(np.nanargmax(c.swap_ab[i]))}",
                f"L{int(np.nanargmax(c.swap_ba[i]))}",
            )
            for i, cat in enumerate(c.categories)
        )
        out.append(
            TableInfo(
                "Probe loss and most sensitive layers",
                (
                    "category",
                    "loss A",
                    "loss B",
                    "A hurt most by B's layer",
                    "B hurt most by A's layer",
                ),
                rows,
            )
        )
    return out


def _weight_blocks(w: WeightScan) -> list[Block]:
    layers = _layer_labels(w.num_layers)
    out: list[Block] = [
        HeatmapInfo(
            "Relative weight delta |B-A| / |A|",
            tuple(w.components),
            layers,
            w.rel_delta.T,
            colorbar="relative delta",
        )
    ]
    if w.base is not None:
        out.append(
            HeatmapInfo(
                "Task-vector cosine (A-base, B-base)",
                tuple(w.components),
                layers,
                w.task_cosine.T,
                colorbar="cosine",
                center=0.0,
            )
        )
        out.append(
            HeatmapInfo(
                "Sign conflicts of the task vectors",
                tuple(w.components),
                layers,
                w.sign_conflict.T,
                colorbar="share of elements",
                caption="Share of elements with opposite signs among those where both task "
                "vectors are nonzero.",
            )
        )
    return out
