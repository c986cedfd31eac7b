"""End-to-end health runs on model folders (what ``darwin health`` calls).

Scan the child and both parents on the same probes (or reuse the parents' scans saved
by ``darwin mri compare``), check, and optionally repair: re-merge in memory, score on
the fitness split only, rescan the repaired child and check again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from darwinmerge.errors import ConfigError
from darwinmerge.evaluate import TaskItem
from darwinmerge.health.check import health_check
from darwinmerge.health.localize import Localization, LocalizeOptions, localize
from darwinmerge.health.options import HealthOptions
from darwinmerge.health.repair import RepairResult, repair
from darwinmerge.health.verdict import Verdict
from darwinmerge.merge.recipe import Recipe
from darwinmerge.mri.pipeline import MriConfig, ProgressFactory, scan_model
from darwinmerge.mri.scan import Scan

__all__ = ["HealthRun", "order_parents", "run_health", "saved_parent_scans"]


@dataclass
class HealthRun:
    child: Scan
    parent_a: Scan
    parent_b: Scan
    verdict: Verdict
    repair: RepairResult | None = None
    swapped: bool = False  # the given parents were swapped to follow the recipe's order


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def order_parents(recipe: Recipe, a: str | Path, b: str | Path) -> bool:
    """True when (a, b) must be swapped to follow the recipe's parent order (A = t 0)."""
    if len(recipe.parents) != 2:
        raise ConfigError(f"health needs a two-parent recipe, this one has {len(recipe.parents)}")
    pa, pb = recipe.parents[0].path, recipe.parents[1].path
    if _same(pa, a) and _same(pb, b):
        return False
    if _same(pa, b) and _same(pb, a):
        return True
    raise ConfigError(
        f"--parents {a} {b} are not the recipe's parents ({pa}, {pb}); give the same folders"
    )


def saved_parent_scans(mri_dir: str | Path, a: str | Path, b: str | Path) -> tuple[Scan, Scan]:
    """The parents' scans from a ``darwin mri compare`` folder (``scan_a`` / ``scan_b``),
    in the order (a, b); a folder made for other models is refused."""
    sa, sb = Scan.load(mri_dir, "scan_a"), Scan.load(mri_dir, "scan_b")
    if _same(sa.model, a) and _same(sb.model, b):
        return sa, sb
    if _same(sa.model, b) and _same(sb.model, a):
        return sb, sa
    raise ConfigError(
        f"{mri_dir}: its scans are of {sa.model} and {sb.model}, not of the parents {a} and {b}"
    )


def _localize(
    child: str | Path,
    parent_a: str | Path,
    parent_b: str | Path,
    cfg: MriConfig,
    opt: LocalizeOptions,
    progress: ProgressFactory | None,
) -> Localization:
    """Load the three models and localize (probes tokenised with the child's tokenizer,
    as its scan was)."""
    from darwinmerge.mri.pipeline import load_model
    from darwinmerge.mri.probes import resolve_probes, tokenize_probes

    model, tok = load_model(child, cfg)
    ma, _ = load_model(parent_a, cfg)
    mb, _ = load_model(parent_b, cfg)
    batches = tokenize_probes(
        resolve_probes(cfg.probes), tok, max_length=cfg.max_length, batch_size=cfg.batch_size
    )
    tick = progress("localize (3 swap scans)", 1) if progress is not None else None
    loc = localize(
        model,
        ma,
        mb,
        batches,
        loss_tokens=cfg.loss,
        options=opt,
        budget_bytes=cfg.swap_budget_bytes,
    )
    if tick is not None:
        tick(1)
    return loc


def run_health(
    child: str | Path,
    parent_a: str | Path,
    parent_b: str | Path,
    cfg: MriConfig,
    options: HealthOptions,
    *,
    recipe: Recipe | None = None,
    mri_dir: str | Path | None = None,
    fitness_items: Sequence[TaskItem] | None = None,
    rounds: int = 3,
    progress: ProgressFactory | None = None,
    localize_options: LocalizeOptions | None = None,
    locate: bool = True,
    scorer: str = "auto",
    score: str = "accuracy",
) -> HealthRun:
    """Scan, localize (unless ``locate`` is off: three swap scans of the child, against
    parent A, parent B and the parents' span), check and (with ``fitness_items`` and a
    ``recipe``) repair in up to ``rounds`` rounds (rescan, localize and re-check after
    each kept one). Parents follow the recipe's order when one is given (swapped if
    needed). The repair scores with the search's scorer (``scorer``, ``score``: see
    :class:`~darwinmerge.evolve.workers.WorkerSpec`)."""
    swapped = order_parents(recipe, parent_a, parent_b) if recipe is not None else False
    if swapped:
        parent_a, parent_b = parent_b, parent_a
    if mri_dir is not None:
        sa, sb = saved_parent_scans(mri_dir, parent_a, parent_b)
    else:
        sa, sb = scan_model(parent_a, cfg, progress), scan_model(parent_b, cfg, progress)
    sc = scan_model(child, cfg, progress)
    lopt = localize_options or LocalizeOptions()
    loc = _localize(child, parent_a, parent_b, cfg, lopt, progress) if locate else None
    verdict = health_check(sc, sa, sb, options, localization=loc, localize_options=lopt)
    run = HealthRun(sc, sa, sb, verdict, swapped=swapped)
    if fitness_items is None:
        return run
    if recipe is None:
        raise ConfigError("--repair needs --recipe (the recipe the child was merged with)")
    from darwinmerge.health.fitness import ResidentFitness
    from darwinmerge.mri.probes import resolve_probes, tokenize_probes

    fitness = ResidentFitness(recipe, fitness_items, device=cfg.device, scorer=scorer, score=score)
    batches = tokenize_probes(
        resolve_probes(cfg.probes),
        fitness.backend.tokenizer,
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
    )

    def recheck(r: Recipe) -> Verdict:
        scan = fitness.scan(r, batches, name=f"{child} (repaired)", options=cfg.scan_options())
        relocated = None
        if locate:
            pa, pb = fitness.parents[0], fitness.parents[1]
            model = fitness.backend.model
            relocated = localize(model, pa, pb, batches, loss_tokens=cfg.loss, options=lopt)
        return health_check(scan, sa, sb, options, localization=relocated, localize_options=lopt)

    run.repair = repair(recipe, verdict, merge_and_score=fitness, recheck=recheck, rounds=rounds)
    return run
