"""``darwin health CHILD --parents A B --out DIR``: scan the child against both parents,
print the verdict, write verdict.json, the scans and report.html; ``--repair`` tries the
prescription (kept only when the fitness split does not drop)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from darwinmerge.atomic import atomic_folder
from darwinmerge.errors import ConfigError, OutputExistsError

__all__ = ["health_command", "register"]


def _print_verdict(console: Any, verdict: Any) -> None:
    from rich.table import Table

    table = Table(title="Health: child vs parents per layer (BI, mean over probe categories)")
    for col in ("layer", "child", "parent A", "parent B", "flags"):
        table.add_column(col, justify="left" if col in ("layer", "flags") else "right")
    import numpy as np

    c, a, b = (np.asarray(x).mean(0) for x in (verdict.bi_child, verdict.bi_a, verdict.bi_b))
    for layer in range(verdict.num_layers):
        flags = ", ".join(
            f"{f.kind.replace('_', ' ')} {f.category} (x{f.severity:.1f})"
            for f in verdict.flags_at(layer)
        )
        table.add_row(f"L{layer}", f"{c[layer]:.3f}", f"{a[layer]:.3f}", f"{b[layer]:.3f}", flags)
    console.print(table)
    loc = verdict.localization
    if loc is not None:
        table = Table(
            title="Localization: probe loss drop with the child's layer replaced "
            f"(flagged above {loc['margin']:.1%})"
        )
        for col in ("layer", "span", "parent A", "parent B", "deviating weights", "flag"):
            table.add_column(col, justify="left" if col in ("layer", "flag") else "right")
        base = float(np.mean(loc["loss"]))
        rec = {
            k: (base - np.asarray(v, dtype=float).mean(0)) / base for k, v in loc["swapped"].items()
        }
        for layer in range(verdict.num_layers):
            dev = loc.get("deviating") or [[] for _ in range(verdict.num_layers)]
            off = [f"{c} t={loc['span_t'][c][layer]:.2f}" for c in dev[layer]]
            rank = loc["flagged"].index(layer) + 1 if layer in loc["flagged"] else None
            table.add_row(
                f"L{layer}",
                *(f"{rec[k][layer]:+.1%}" for k in ("span", "A", "B")),
                ", ".join(off) or "-",
                f"#{rank}" if rank else "",
            )
        console.print(table)
    console.print(verdict.summary)


def health_command(
    child: Annotated[Path, typer.Argument(help="The child model folder.")],
    parents: Annotated[
        tuple[Path, Path],
        typer.Option("--parents", help="Parent A and parent B (the recipe's order: A is t=0)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    probes: Annotated[
        list[str] | None,
        typer.Option("--probes", "-p", help="Probe sets as for `darwin mri` (default builtin)."),
    ] = None,
    mri: Annotated[
        Path | None,
        typer.Option(help="Reuse the parents' scans of this `darwin mri compare` folder."),
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="The recipe the child was merged with (YAML).")
    ] = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Apply the prescription, keep it if fitness holds.")
    ] = False,
    tasks: Annotated[
        str | None, typer.Option(help="--repair: task spec scored on its FITNESS split.")
    ] = None,
    per_category: Annotated[
        int | None,
        typer.Option(help="--repair: N fitness items per category (stratified, seed 0)."),
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="--repair: most rounds of repair + rescan + re-check.")
    ] = 3,
    interference_rel: float = typer.Option(0.25, help="Interference margin x max parent BI."),
    interference_abs: float = typer.Option(0.02, help="Interference margin floor (BI units)."),
    function_loss_rel: float = typer.Option(0.5, help="Function-loss margin x min parent BI."),
    function_loss_abs: float = typer.Option(0.02, help="Function-loss margin floor."),
    material: float = typer.Option(0.05, help="Function loss only where a parent's BI >= this."),
    entropy_margin: float = typer.Option(0.1, help="Router entropy collapse margin (/ log E)."),
    loss_rel: float = typer.Option(0.05, help="Probe loss 'worse': above both parents by this."),
    move_step: float = typer.Option(0.5, help="Prescribed share of the way toward a parent."),
    density_factor: float = typer.Option(0.7, help="Prescribed density factor (interference)."),
    upstream_first: bool = typer.Option(
        True,
        "--upstream-first/--every-layer",
        help="BI rules: earliest flagged layer only.",
    ),
    localize: bool = typer.Option(
        True, "--localize/--no-localize", help="Swap scans that locate the damaged layer."
    ),
    localize_margin: float = typer.Option(
        0.04,
        help="Flag a layer whose replacement lowers the probe loss by this share.",
    ),
    localize_deviation: float = typer.Option(
        0.05,
        help="A component deviates when its t (or weights) is this far from the layer's.",
    ),
    localize_deviation_margin: float = typer.Option(
        0.015,
        help="Flag a deviating layer whose return to the span lowers the loss this much.",
    ),
    localize_max_layers: int = typer.Option(
        1,
        "--localize-max-layers",
        "--localize-layers",
        help="Prescribe for this many localized layers.",
    ),
    tokenizer: str | None = typer.Option(None, help="Tokenizer folder (default: each model's)."),
    max_length: int = typer.Option(128, help="Tokens per probe."),
    batch_size: int = typer.Option(16, help="Probes per forward pass."),
    loss_tokens: str = typer.Option(
        "completion",
        "--loss-tokens",
        "--loss",
        help="Probe loss over: completion | all.",
    ),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out."),
) -> None:
    """Child health check: interference, function loss, routing, probe loss; prescription."""
    from rich.console import Console

    from darwinmerge.cli.fields import from_flags
    from darwinmerge.health import run_health
    from darwinmerge.health.options import HealthOptions, LocalizeOptions
    from darwinmerge.merge import load_recipe
    from darwinmerge.mri.config import MriConfig
    from darwinmerge.report import health_section, write_report

    flags = locals()
    options = from_flags(HealthOptions, flags)
    lopt = from_flags(LocalizeOptions, flags, "localize_")
    cfg = from_flags(MriConfig, flags, probes=tuple(probes or ["builtin"]), swap=False)
    if repair and (recipe is None or tasks is None):
        raise ConfigError("--repair needs --recipe RECIPE and --tasks SPEC (fitness split)")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out}: exists and is not empty; pass --force to replace it")
    rec = load_recipe(recipe) if recipe is not None else None
    items = None
    if repair:
        from darwinmerge.evaluate import load_tasks
        from darwinmerge.evaluate.tasks import stratified_subset

        assert tasks is not None
        items = load_tasks(tasks, split="fitness")
        if per_category is not None:
            items = stratified_subset(items, per_category, seed=0)
    console = Console()
    run = run_health(
        child,
        parents[0],
        parents[1],
        cfg,
        options,
        recipe=rec,
        mri_dir=mri,
        fitness_items=items,
        rounds=rounds,
        localize_options=lopt,
        locate=localize,
    )
    if run.swapped:
        console.print("note: --parents swapped to follow the recipe's order (A = t 0)")
    with atomic_folder(out, force=True) as tmp:  # a non-empty --out was refused above
        run.verdict.save(tmp)
        run.child.save(tmp, "scan_child")
        run.parent_a.save(tmp, "scan_a")
        run.parent_b.save(tmp, "scan_b")
        _print_verdict(console, run.verdict)
        sections = [health_section(run.verdict)]
        meta: dict[str, Any] = {"child": child, "A": parents[0], "B": parents[1]}
        if run.swapped:
            meta["A"], meta["B"] = parents[1], parents[0]
        meta["probes"] = ", ".join(cfg.probes)
        if run.repair is not None:
            rep = run.repair
            (tmp / "repaired_recipe.yaml").write_text(rep.recipe.to_yaml(), encoding="utf-8")
            for a in rep.attempts:
                mark = "kept" if a.kept else "refused"
                changes = "; ".join(a.changes)
                console.print(
                    f"repair {mark}: fitness {a.score:.4f} vs {a.reference:.4f}: {changes}"
                )
            meta["repair (fitness split)"] = (
                f"{rep.baseline:.4f} -> {rep.score:.4f}, kept {len(rep.kept)} of "
                f"{len(run.verdict.prescription)} change(s)"
            )
            if rep.verdict_after is not None:
                rep.verdict_after.save(tmp / "after_repair")
                after = health_section(rep.verdict_after)
                sections.append(after.__class__("health-after", "After the repair", after.blocks))
                console.print("after the repair: " + rep.verdict_after.summary)
        write_report(tmp / "report.html", "darwinmerge - Child health check", sections, meta=meta)
    console.print(f"wrote {out} (verdict.json, report.html)")


def register(app: typer.Typer) -> None:
    app.command("health")(health_command)
