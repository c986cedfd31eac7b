"""``run(config, out)``: the whole pipeline, phase by phase, resumable.

Run folder (``RUN``)::

    RUN/run.json            the ledger: the run's config and every finished phase
    RUN/mri/                Phase 0: both parents' scans, the comparison, the weight scan
    RUN/prior.json          Phase 1: start genome, step sizes, box, a reason per gene,
                            and the start genome decoded to a recipe
    RUN/evolve/             Phase 2: the study, evolution.json, winner_recipe.yaml, child/
    RUN/health/             Phase 3: verdict.json (+ repair.json, repaired_recipe.yaml and
                            child/ when a repair was kept)
    RUN/final/results.json  per-item test-split results of father, mother and child
    RUN/final_scores.json   the final table (see :mod:`darwinmerge.run.final`)
    RUN/report.html         one self-contained report of the run

A phase is marked done in the ledger only when its outputs are complete; a re-run skips
finished phases, and a killed run resumes at the first unfinished one (Phase 2 continues
its own study: trials in flight at the kill are the only loss).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darwinmerge.atomic import atomic_folder, write_json_atomic
from darwinmerge.run.config import RunConfig
from darwinmerge.run.final import FINAL_SCORES_FILE, START, FinalScores, evaluate_final
from darwinmerge.run.state import RunLedger

__all__ = ["PHASES", "RunResult", "run", "final_child"]

PHASES = ("mri", "prior", "evolve", "health", "final", "report")

Log = Callable[[str], None]


@dataclass
class RunResult:
    run_dir: Path
    child: Path
    recipe: Path
    final: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    report: Path | None = None
    stopped_after: str | None = None

    @property
    def finished(self) -> bool:
        """Every phase is done (the child and its table exist)."""
        return self.child.is_dir() and bool(self.final)


def _write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data)


# --- the phases ----------------------------------------------------------------------


def _phase_mri(cfg: RunConfig, out: Path, log: Log) -> dict[str, Any]:
    from darwinmerge.mri.pipeline import compare_models

    mri = cfg.mri_config()
    father, mother = cfg.parents[cfg.father], cfg.parents[cfg.mother]
    log(f"Phase 0 MRI: {cfg.father} and {cfg.mother} on {', '.join(cfg.probes)}")
    result = compare_models(father, mother, mri, base=cfg.base)
    # a folder left by a run killed before the ledger was marked is replaced
    with atomic_folder(out / "mri", force=True) as tmp:
        result.save(tmp)
    c = result.comparison
    return {"categories": list(c.categories), "layers": c.num_layers}


def _phase_prior(cfg: RunConfig, out: Path, log: Log) -> dict[str, Any]:
    from darwinmerge.evolve.api import space_and_prior

    ec = cfg.evolve_config(out / "mri")
    space, prior = space_and_prior(ec)
    start = space.decode(prior.mean)
    genes = [
        {
            "name": getattr(g, "name", str(g)),
            "mean": float(prior.mean[i]),
            "sigma": float(prior.sigma[i]),
            "lower": float(prior.lower[i]),
            "upper": float(prior.upper[i]),
            "reason": prior.reasons[i],
        }
        for i, g in enumerate(space.genes)
    ]
    payload = {
        "kind": cfg.prior.kind,
        "target": cfg.prior.target,
        "space": getattr(space, "name", "genome"),
        "genes": genes,
        "decoded": dict(space.describe(prior.mean)),
        "start_recipe": start.to_yaml(),
    }
    _write_json(out / "prior.json", payload)
    log(f"Phase 1 prior: {len(genes)} genes ({cfg.prior.kind})")
    return {"genes": len(genes)}


def _phase_evolve(
    cfg: RunConfig, out: Path, log: Log, on_trial: Callable[[Any], None] | None
) -> dict[str, Any]:
    from darwinmerge.evolve.api import evolve

    ec = cfg.evolve_config(out / "mri")
    folder = out / "evolve"
    resume = (folder / "config.yaml").is_file()
    log(f"Phase 2 evolve: {ec.trials} candidates" + (" (resuming the study)" if resume else ""))
    result = evolve(ec, folder, resume=resume, force=not resume, on_trial=on_trial, log=log)
    return {
        "trials": result.trials,
        "winner": result.winner,
        "winner_fitness": result.winner_fitness,
    }


def _winner_recipe(out: Path) -> Any:
    from darwinmerge.merge.recipe import Recipe

    text = (out / "evolve" / "winner_recipe.yaml").read_text()
    return Recipe.from_yaml(text, source=str(out / "evolve" / "winner_recipe.yaml"))


def _phase_health(cfg: RunConfig, out: Path, log: Log) -> dict[str, Any]:
    from darwinmerge.health.pipeline import run_health

    recipe = _winner_recipe(out)
    fitness_items = None
    ec = cfg.evolve_config(out / "mri")
    score = "accuracy"
    if cfg.health.repair:
        from darwinmerge.evolve.api import fitness_score, fitness_subset

        fitness_items = fitness_subset(ec)
        score = fitness_score(ec, fitness_items)  # the search's own score
    log("Phase 3 health: child against both parents" + (" (+ repair)" if fitness_items else ""))
    health = run_health(
        out / "evolve" / "child",
        cfg.parents[cfg.father],
        cfg.parents[cfg.mother],
        cfg.mri_config(),
        cfg.health_options(),
        recipe=recipe,
        mri_dir=out / "mri",
        fitness_items=fitness_items,
        scorer=ec.fitness.scorer,
        score=score,
    )
    info: dict[str, Any] = {"healthy": health.verdict.healthy, "repaired": False}
    with atomic_folder(out / "health", force=True) as tmp:
        health.verdict.save(tmp)
        rep = health.repair
        if rep is not None:
            record = {
                "baseline": rep.baseline,
                "score": rep.score,
                "kept": [c.describe() for c in rep.kept],
                "attempts": [dataclasses.asdict(a) for a in rep.attempts],
            }
            (tmp / "repair.json").write_text(json.dumps(record, indent=2) + "\n")
            if rep.repaired:
                from darwinmerge.merge.api import merge_to_disk

                (tmp / "repaired_recipe.yaml").write_text(rep.recipe.to_yaml())
                merge_to_disk(rep.recipe, tmp / "child", force=True)
                info["repaired"] = True
    verdict = "healthy" if info["healthy"] else "flags raised"
    log(f"Phase 3 health: {verdict}; repair kept: {info['repaired']}")
    return info


def final_child(out: Path) -> tuple[Path, Path]:
    """(child folder, recipe file) of a run: the repaired child when a repair was kept,
    else the search's winner."""
    repaired = out / "health" / "child"
    if repaired.is_dir():
        return repaired, out / "health" / "repaired_recipe.yaml"
    return out / "evolve" / "child", out / "evolve" / "winner_recipe.yaml"


def _phase_final(cfg: RunConfig, out: Path, log: Log) -> dict[str, Any]:
    from darwinmerge.evaluate.results_io import results_payload
    from darwinmerge.evaluate.tasks import load_tasks

    child, _ = final_child(out)
    items = load_tasks(cfg.tasks, split="test", test_fraction=cfg.test_fraction)
    log(f"final: father, mother and child on {len(items)} test-split items")
    ec = cfg.evolve_config(out / "mri")
    models: dict[str, str | Path] = {
        "father": cfg.parents[cfg.father],
        "mother": cfg.parents[cfg.mother],
        "child": child,
    }
    with tempfile.TemporaryDirectory(prefix=".start-", dir=out) as scratch:
        start = _start_child(cfg, out, Path(scratch), log)
        if start is not None:
            models[START] = start
        scores = evaluate_final(
            models,
            items,
            alpha=cfg.final.alpha,
            backend=ec.backend.name,
            device=ec.backend.device,
            dtype=ec.backend.dtype,
            batch_size=cfg.final.batch_size,
            max_new_tokens=ec.backend.max_new_tokens,
            scorer=ec.fitness.scorer,
        )
    payload = results_payload(
        scores.results,
        list(scores.paired.values()),
        meta={"split": "test", "tasks": cfg.tasks, "child": str(child), "alpha": cfg.final.alpha},
    )
    with atomic_folder(out / "final", force=True) as tmp:
        (tmp / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    _write_json(out / FINAL_SCORES_FILE, scores.to_dict())
    return _headline(scores)


def _start_child(cfg: RunConfig, out: Path, scratch: Path, log: Log) -> Path | None:
    """The search's start (``prior.json: start_recipe``) merged into ``scratch`` for the
    final table, or None when ``final.vs_start`` is off or the run has no prior."""
    prior = out / "prior.json"
    if not cfg.final.vs_start or not prior.is_file():
        return None
    from darwinmerge.merge.api import merge_to_disk
    from darwinmerge.merge.recipe import Recipe

    recipe = Recipe.from_yaml(json.loads(prior.read_text())["start_recipe"], source=str(prior))
    log("final: the search's start (the prior's recipe) merged to score it too")
    merge_to_disk(recipe, scratch / "start")
    return scratch / "start"


def _headline(scores: FinalScores) -> dict[str, Any]:
    from darwinmerge.evaluate.results import OVERALL

    head: dict[str, Any] = {n: r.overall.score for n, r in scores.results.items()}
    for key, c in scores.paired.items():
        head[f"p_{key}"] = c.rows[OVERALL].p_value
    return head


def _phase_report(cfg: RunConfig, out: Path, log: Log) -> dict[str, Any]:
    from darwinmerge.run.report import write_run_report

    path = write_run_report(out)
    log(f"report: {path}")
    return {"path": str(path)}


# --- the driver ------------------------------------------------------------------------


def run(
    config: RunConfig,
    out: str | Path,
    *,
    force: bool = False,
    log: Log | None = None,
    on_trial: Callable[[Any], None] | None = None,
    stop_after: str | None = None,
) -> RunResult:
    """Run (or resume) the pipeline of ``config`` in the folder ``out``.

    ``stop_after`` ends the run after the named phase (the rest resumes on the next
    call); ``force`` starts afresh in a folder that holds another run."""
    say = log or (lambda _m: None)
    out = Path(out).absolute()  # recipes written here name scans by absolute path
    if stop_after is not None and stop_after not in PHASES:
        from darwinmerge.errors import ConfigError

        raise ConfigError(f"stop_after: {stop_after!r} is not a phase ({', '.join(PHASES)})")
    ledger = RunLedger.open(out, config.ledger_data(), force=force)
    result = RunResult(run_dir=out, child=out, recipe=out, final={}, stopped_after=stop_after)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "mri": lambda: _phase_mri(config, out, say),
        "prior": lambda: _phase_prior(config, out, say),
        "evolve": lambda: _phase_evolve(config, out, say, on_trial),
        "health": lambda: _phase_health(config, out, say),
        "final": lambda: _phase_final(config, out, say),
        "report": lambda: _phase_report(config, out, say),
    }
    for phase in PHASES:
        skip = (phase == "health" and not config.health.enabled) or (
            phase == "report" and not config.report
        )
        if ledger.done(phase):
            result.skipped.append(phase)
            say(f"{phase}: finished in an earlier run; skipped")
        elif not skip:
            start = time.perf_counter()
            info = steps[phase]()
            seconds = time.perf_counter() - start
            ledger.mark(phase, seconds=round(seconds, 2), **info)
            result.seconds[phase] = seconds
        if phase == stop_after:
            break
    result.child, result.recipe = final_child(out)
    if (out / FINAL_SCORES_FILE).is_file():
        result.final = json.loads((out / FINAL_SCORES_FILE).read_text())
    if (out / "report.html").is_file():
        result.report = out / "report.html"
    return result
