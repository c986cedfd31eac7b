"""The recipe section: a merge recipe drawn per layer and component.

Every recipe-level parameter (``t`` for the search's spaces: B's share) is resolved with
:func:`~darwinmerge.merge.recipe.resolve_schedule` for each layer x component, exactly as
the planner resolves it for a tensor of that layer and component, and drawn as a heatmap;
the router source per layer (:func:`~darwinmerge.merge.recipe.resolve_router`) and the
revived / transplanted experts (slot by slot) come next, then the per-parent parameters
and the tensors outside the layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from darwinmerge.merge.recipe import MERGED, Recipe, resolve_router, resolve_schedule
from darwinmerge.report.html import SECTIONS
from darwinmerge.report.info import Block, HeatmapInfo, SectionInfo, TableInfo, TextInfo

__all__ = [
    "DEFAULT_COMPONENTS",
    "NON_LAYER",
    "RevivedExpert",
    "recipe_section",
    "recipe_values",
    "revived_experts",
    "router_sources",
]

#: Components drawn when the parents' own list (the weight scan's) is not known.
DEFAULT_COMPONENTS = ("attn", "norm", "router", "experts", "shared_expert", "dense_mlp")
#: Tensors outside the layers (resolved with ``layer=None``).
NON_LAYER = ("embed", "final_norm", "lm_head")


@dataclass(frozen=True)
class RevivedExpert:
    """Child expert ``expert`` of ``layer`` comes from ``source`` (``why``: ``revive`` =
    dead in the receiving parent, ``transplant`` = an explicit recipe transplant)."""

    layer: int
    expert: int
    source: str
    why: str


def recipe_values(
    recipe: Recipe,
    parameter: str,
    num_layers: int,
    components: Sequence[str],
    *,
    parent: str | None = None,
) -> np.ndarray:
    """[components, layers] value of a recipe-level ``parameter`` (of ``parent``'s own
    parameters when given; NaN where no rule matches), resolved as for a tensor named
    ``""`` (rules with a ``filter`` never match)."""
    schedule = (
        recipe.parameters[parameter]
        if parent is None
        else recipe.parent(parent).parameters[parameter]
    )
    out = np.full((len(components), num_layers), np.nan)
    for i, comp in enumerate(components):
        for layer in range(num_layers):
            v = resolve_schedule(
                schedule, layer=layer, component=comp, tensor_name="", num_layers=num_layers
            )
            if v is not None:
                out[i, layer] = v
    return out


def router_sources(recipe: Recipe, num_layers: int) -> list[str]:
    """Router source of every layer: a parent name or ``"merged"``."""
    return [resolve_router(recipe, layer) for layer in range(num_layers)]


def _spans(values: Sequence[str]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for i, v in enumerate(values):
        if out and out[-1][2] == v and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i, v)
        else:
            out.append((i, i, v))
    return out


def _span(first: int, last: int) -> str:
    return f"L{first}" if first == last else f"L{first}-{last}"


def revived_experts(recipe: Recipe, *, scan_dir: str | Path | None = None) -> list[RevivedExpert]:
    """Explicit transplants plus the experts ``revive:`` moves (dead in the receiving
    parent's scan at the recipe's threshold, minus those dead in the donor's scan).

    A scan path of the recipe that no longer exists (a moved run folder) is looked up by
    its file name in ``scan_dir``."""
    from darwinmerge.merge.revive import read_dead_experts

    out = [RevivedExpert(t.layer, t.expert, t.source, "transplant") for t in recipe.transplants]
    rv = recipe.revive
    if rv is None:
        return out

    def _where(spec: str | Mapping[int, list[int]]) -> str | Mapping[int, list[int]]:
        if isinstance(spec, str) and not Path(spec).exists() and scan_dir is not None:
            moved = Path(scan_dir) / Path(spec).name
            if moved.exists():
                return str(moved)
        return spec

    dead = read_dead_experts(_where(rv.scan), rv.threshold)
    donor = (
        read_dead_experts(_where(rv.donor_scan), rv.threshold, field="revive.donor_scan")
        if rv.donor_scan is not None
        else None
    )
    taken = {(r.layer, r.expert) for r in out}
    for layer, ids in sorted(dead.dead.items()):
        for e in ids:
            if donor is not None and e in donor.dead.get(layer, []):
                continue
            if (layer, e) not in taken:
                out.append(RevivedExpert(layer, e, rv.source, "revive"))
    return sorted(out, key=lambda r: (r.layer, r.expert))


@SECTIONS.register("recipe")
def recipe_section(
    recipe: Recipe,
    num_layers: int,
    *,
    components: Sequence[str] = DEFAULT_COMPONENTS,
    revived: Sequence[RevivedExpert] = (),
    num_experts: int = 0,
    title: str = "The final recipe",
    phase: str = "recipe",
    note: str = "",
) -> SectionInfo:
    """Info for one recipe drawn per layer x component."""
    names = [p.name for p in recipe.parents]
    a, b = names[0], names[-1]
    layers = tuple(str(i) for i in range(num_layers))
    blocks: list[Block] = []
    intro = f"Method {recipe.method}; parents {', '.join(names)}" + (
        f"; base {recipe.base}" if recipe.base else ""
    )
    blocks.append(TextInfo(intro + (f". {note}" if note else ".")))
    drawn: list[tuple[str, str | None]] = [
        (param, None) for param, sch in recipe.parameters.items() if not isinstance(sch, bool)
    ]
    drawn += [
        (param, p.name)
        for p in recipe.parents
        for param, sch in p.parameters.items()
        if isinstance(sch, list)
    ]
    for param, owner in drawn:
        vals = recipe_values(recipe, param, num_layers, components, parent=owner)
        is_t = param == "t" and owner is None
        label = param if owner is None else f"{param} ({owner})"
        blocks.append(
            HeatmapInfo(
                f"Recipe: {label} per layer and component",
                tuple(components),
                layers,
                vals,
                colorbar=f"t: {b}'s share (0 = {a}, 1 = {b})" if is_t else label,
                center=0.5 if is_t else None,
                vrange=(0.0, 1.0) if is_t else None,
                caption=(f"Blue: closer to {a}; red: closer to {b}. " if is_t else "")
                + "Each cell is the value the merge uses for that layer's tensors of that "
                "component (blank: no rule matches; rules with a name filter are not drawn).",
            )
        )
    routers = router_sources(recipe, num_layers)
    code = {a: 0.0, MERGED: 0.5, b: 1.0}
    blocks.append(
        HeatmapInfo(
            "Router source per layer",
            ("router",),
            layers,
            np.array([[code.get(s, np.nan) for s in routers]]),
            colorbar="source",
            center=0.5,
            vrange=(0.0, 1.0),
            caption=f"Blue (0): {a}'s router; white (0.5): merged; red (1): {b}'s. "
            "Which router (gate) each layer keeps: "
            + "; ".join(f"{_span(f, la)}: {s}" for f, la, s in _spans(routers))
            + ".",
        )
    )
    if revived:
        sparse = sorted({r.layer for r in revived})
        experts = max(num_experts, max(r.expert for r in revived) + 1)
        grid = np.zeros((len(sparse), experts))
        for r in revived:
            grid[sparse.index(r.layer), r.expert] = 1.0
        blocks.append(
            HeatmapInfo(
                "Revived / transplanted experts",
                tuple(f"L{i}" for i in sparse),
                tuple(str(e) for e in range(experts)),
                grid,
                colorbar="1 = taken from the other parent",
                vrange=(0.0, 1.0),
                xlabel="expert",
                caption="Bright: the child's expert in this slot is another parent's, its "
                "router row moved with it.",
            )
        )
        by_layer: dict[int, list[RevivedExpert]] = {}
        for r in revived:
            by_layer.setdefault(r.layer, []).append(r)
        blocks.append(
            TableInfo(
                "Revived experts per layer",
                ("layer", "experts", "from", "why"),
                tuple(
                    (
                        f"L{layer}",
                        ", ".join(str(r.expert) for r in rs),
                        ", ".join(sorted({r.source for r in rs})),
                        ", ".join(sorted({r.why for r in rs})),
                    )
                    for layer, rs in sorted(by_layer.items())
                ),
            )
        )
    else:
        blocks.append(TextInfo("No expert is revived or transplanted."))
    rows = []
    for param, schedule in recipe.parameters.items():
        if isinstance(schedule, bool):
            rows.append((param, "all", str(schedule).lower()))
            continue
        for comp in NON_LAYER:
            v = resolve_schedule(
                schedule, layer=None, component=comp, tensor_name="", num_layers=num_layers
            )
            rows.append((param, comp, "-" if v is None else f"{v:.4f}"))
    for p in recipe.parents:
        for param, schedule in p.parameters.items():
            v = resolve_schedule(
                schedule, layer=None, component="other", tensor_name="", num_layers=num_layers
            )
            shown = (
                f"{v:.4f}" if isinstance(schedule, int | float) and v is not None else "drawn above"
            )
            rows.append((f"{param} ({p.name})", "all", shown))
    if rows:
        blocks.append(
            TableInfo(
                "Outside the layers and per-parent parameters",
                ("parameter", "component", "value"),
                tuple(rows),
            )
        )
    return SectionInfo(phase, title, tuple(blocks))
