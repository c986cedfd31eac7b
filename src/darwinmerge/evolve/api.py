"""``evolve(config, out_dir, resume=...)``: the library entry point of ``darwin evolve``.

Run folder (``RUN``)::

    RUN/config.yaml          the resolved config of the run (resume checks it is the same)
    RUN/study.journal        the Optuna study (unless ``storage`` names a database)
    RUN/evolution.json       per trial: genome, genes, recipe, fitness per category, merge
                             and evaluation seconds, items used, state; the early-stop
                             summary; the honest selection (test split) and its gap
    RUN/winner_recipe.yaml   the winner's recipe (``darwin merge`` can rebuild the child)
    RUN/child/               the winner merged through the checkpoint writer, with a
                             model card holding the recipe, the scores and a search summary
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from darwinmerge.atomic import atomic_folder, write_text_atomic
from darwinmerge.errors import ConfigError, EvaluationError, OutputExistsError
from darwinmerge.evolve.check import check_evolve_config
from darwinmerge.evolve.config import EvolveConfig
from darwinmerge.evolve.early_stop import EarlyStopRule
from darwinmerge.evolve.optimizer import SearchBox, make_sampler
from darwinmerge.evolve.runner import (
    Objective,
    TrialEvent,
    fail_stale_trials,
    finished_count,
    run_search,
    stop_audit,
)
from darwinmerge.evolve.select import (
    Selection,
    choose_winner,
    honest_selection,
    rescore_winner,
)
from darwinmerge.evolve.study import (
    STUDY_NAME,
    create_study,
    half_created,
    load_study,
    mark_created,
    open_storage,
    stored_box,
    trial_records,
)
from darwinmerge.evolve.workers import CandidateWorker, InProcessPool, RayPool, WorkerSpec

__all__ = [
    "EVOLUTION_FILE",
    "EvolveResult",
    "blind_box",
    "check_evolve_config",
    "evolve",
    "fitness_subset",
    "fitness_score",
    "run_evolution",
    "space_and_prior",
    "worker_spec",
]

EVOLUTION_FILE = "evolution.json"
CONFIG_FILE = "config.yaml"
WINNER_FILE = "winner_recipe.yaml"


@dataclass
class EvolveResult:
    run_dir: Path
    trials: int
    winner: int | None
    winner_fitness: float | None
    selection: Selection | None
    child: Path | None
    early_stop: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def blind_box(names: list[str]) -> SearchBox:
    """Mean 0.5, sigma 1/6, box [0, 1] on every gene (mergekit-evolve's start)."""
    d = len(names)
    return SearchBox(tuple(names), (0.5,) * d, (1 / 6,) * d, (0.0,) * d, (1.0,) * d)


def _gene_names(space: Any) -> list[str]:
    return [g.name if hasattr(g, "name") else str(g) for g in space.genes]


def space_and_prior(config: EvolveConfig) -> tuple[Any, Any]:
    """The genome space of ``config`` and its :class:`~darwinmerge.evolve.prior.Prior`
    (blind, or from the ``darwin mri compare`` folder ``prior.scans``), reasons included.
    With ``prior.trust: gene`` the space is a :class:`~darwinmerge.evolve.space_trust.
    TrustedSpace` (one more gene) and the prior its start."""
    from darwinmerge.evolve.prior import blind_prior, prior_from_scans
    from darwinmerge.evolve.space import SPACE_ADAPTER, SpaceContext, build_space

    scans: dict[str, str] = {}
    if config.prior.kind == "mri" and config.prior.scans:
        folder = Path(config.prior.scans)
        for name, stem in zip(config.parents, ("scan_a", "scan_b"), strict=False):
            if (folder / f"{stem}.json").is_file():
                scans[name] = str(folder / f"{stem}.json")
    space_cfg = SPACE_ADAPTER.validate_python(config.space)
    ctx = SpaceContext.from_parents(dict(config.parents), base=config.base, scans=scans)
    space = build_space(space_cfg, ctx)
    if config.prior.kind == "blind":
        return space, blind_prior(space)
    assert config.prior.scans is not None
    prior = prior_from_scans(space, config.prior.scans, target=config.prior.target)
    if config.prior.trust == "gene":
        from darwinmerge.evolve.space_trust import TrustedSpace, trusted_prior

        return TrustedSpace(space, prior.mean), trusted_prior(prior)
    return space, prior


def _build_space_and_prior(config: EvolveConfig) -> tuple[Any, SearchBox]:
    """The genome space and the search box of its prior."""
    space, prior = space_and_prior(config)
    return space, SearchBox.from_prior(_gene_names(space), prior)


def fitness_subset(config: EvolveConfig) -> list[Any]:
    """The fitness-split items one candidate is scored on (the seeded stratified subset)."""
    return _items(config)[2]


def evolve(
    config: EvolveConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    on_trial: Callable[[TrialEvent], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> EvolveResult:
    """Search genomes for ``config`` into the run folder ``out_dir`` (see module doc)."""
    space, box = _build_space_and_prior(config)
    return run_evolution(
        config, space, box, out_dir, resume=resume, force=force, on_trial=on_trial, log=log
    )


def _prepare_run_dir(out: Path, config: EvolveConfig, *, resume: bool, force: bool) -> None:
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    if resume:
        if not (out / CONFIG_FILE).is_file():
            raise ConfigError(f"{out}: no run to resume (no {CONFIG_FILE}); start without --resume")
        old = yaml.safe_load((out / CONFIG_FILE).read_text())
        new = yaml.safe_load(text)
        ignore = ("trials", "time_budget_s", "workers", "select")
        diff = sorted(
            k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k)
        )
        if diff:
            raise ConfigError(
                f"{out}: --resume with a different config ({', '.join(diff)} changed); "
                f"only trials, time_budget_s, workers and select may change"
            )
        write_text_atomic(out / CONFIG_FILE, text)
        return
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(
                f"{out} exists; pass --resume to continue that run or --force to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG_FILE, text)


def _items(config: EvolveConfig) -> tuple[list[Any], list[Any], list[Any], list[str]]:
    from darwinmerge.evaluate.tasks import filter_split, load_tasks, stratified_subset

    every = load_tasks(config.tasks, split=None)
    fitness = filter_split(every, "fitness", test_fraction=config.test_fraction)
    if not fitness:
        raise ConfigError(f"tasks {config.tasks!r}: the fitness split is empty")
    subset = stratified_subset(fitness, config.fitness.subset, seed=config.fitness.subset_seed)
    present = sorted({it.category for it in subset})
    categories = list(config.fitness.categories or present)
    missing = [
        c
        for c in categories + ([config.fitness.keep] if config.fitness.keep else [])
        if c not in present
    ]
    if missing:
        raise ConfigError(
            f"fitness.categories: {missing[0]!r} is not a category of {config.tasks!r} "
            f"(known: {', '.join(present)})"
        )
    return every, fitness, subset, categories


AUTO_SCORE = "gold_margin"
"""What ``fitness.score: auto`` means on items that carry a gold ``target``."""


def fitness_score(config: EvolveConfig, items: list[Any]) -> str:
    """The score the search optimises: ``fitness.score``, with ``auto`` resolved to
    ``gold_margin`` when every item has a gold ``target`` and no ``keep`` objective is set,
    else to ``accuracy``."""
    score = config.fitness.score
    if score != "auto":
        return score
    if config.fitness.keep is None and items and all(it.target is not None for it in items):
        return AUTO_SCORE
    return "accuracy"


def worker_spec(
    config: EvolveConfig, items: list[Any], categories: list[str], score: str | None = None
) -> WorkerSpec:
    es = config.early_stop
    rule = EarlyStopRule(z=es.z, min_items=es.min_items) if es.enabled else None
    return WorkerSpec(
        parents=tuple(config.parents.items()),
        base=config.base,
        items=tuple(items),
        categories=tuple(categories),
        scorer=config.fitness.scorer,
        score=score or fitness_score(config, items),
        chunk_size=config.fitness.chunk_size,
        backend=config.backend.engine_for(next(iter(config.parents.values()))),
        batch_size=config.backend.batch_size,
        max_new_tokens=config.backend.max_new_tokens,
        device=config.backend.device,
        dtype=config.backend.dtype,
        rule=rule,
        audit=es.audit,
        threads=config.workers.threads,
        engine_options=tuple(sorted(config.backend.engine_options.items())),
        options=config.options,
    )


def anchor_genome(config: EvolveConfig, space: Any, box: SearchBox) -> np.ndarray | None:
    """The blind start that ``optimizer.anchor`` adds as the second trial (clipped into
    the user's ``bounds``), or None: anchor off, no start trial, a space without a blind
    start or with its own start genome (``trust: gene``), or a start that is already
    the blind one (the blind prior's)."""
    opt = config.optimizer
    if not (opt.anchor and opt.start_first) or getattr(space, "start_genome", None) is not None:
        return None
    blind_mean = getattr(space, "blind_mean", None)
    if blind_mean is None:
        return None
    neutral = np.asarray(blind_mean(), dtype=float).copy()
    for i, name in enumerate(box.names):
        if name in config.bounds:
            lo, hi = config.bounds[name]
            neutral[i] = min(max(neutral[i], lo), hi)
    if np.allclose(neutral, np.asarray(box.mean, dtype=float), atol=1e-9):
        return None
    return neutral


def run_evolution(
    config: EvolveConfig,
    space: Any,
    box: SearchBox,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    on_trial: Callable[[TrialEvent], None] | None = None,
    log: Callable[[str], None] | None = None,
    ray_init: dict[str, Any] | None = None,
) -> EvolveResult:
    """The search over ``space`` (``.genes``, ``.decode(x) -> Recipe``, ``.describe(x)``)
    started from ``box``; then honest selection and the outputs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    say = log or (lambda _m: None)
    start = time.perf_counter()
    out = Path(out_dir)
    # every check that can fail runs before the run folder is touched
    every, _fitness, subset, categories = _items(config)
    narrowed = box.narrowed(dict(config.bounds))
    anchor = anchor_genome(config, space, narrowed)
    if anchor is not None:
        narrowed = narrowed.including(anchor.tolist())
    _prepare_run_dir(out, config, resume=resume, force=force)
    objective = Objective(tuple(categories), config.fitness.keep)
    storage = open_storage(out, config.storage)
    opt = config.optimizer
    options = {"popsize": opt.popsize}
    if resume and half_created(storage):  # killed before the study was fully made
        if STUDY_NAME in optuna.get_all_study_names(storage):
            optuna.delete_study(study_name=STUDY_NAME, storage=storage)
        say("resuming: the study was cut off while it was being created; starting it afresh")
        resume = False
    if resume:
        box = stored_box(storage)  # the distribution the run started from
        study = load_study(storage, make_sampler(opt.name, box, seed=opt.seed, options=options))
        stale = fail_stale_trials(study)
        say(f"resuming: {finished_count(study)} trials done, {len(stale)} lost in flight")
    else:
        box = narrowed
        sampler = make_sampler(opt.name, box, seed=opt.seed, options=options)
        attrs = {
            "space": getattr(space, "name", "genome"),
            "categories": categories,
            "keep": config.fitness.keep,
            "items_per_candidate": len(subset),
        }
        study = create_study(
            storage, sampler, box=box, directions=objective.directions, attrs=attrs
        )
        if opt.start_first:  # the prior's start (a trusted space: tau = 1)
            first = getattr(space, "start_genome", None)
            first = box.mean if first is None else first
            study.enqueue_trial(dict(zip(box.names, map(float, first), strict=True)))
        if anchor is not None:
            study.enqueue_trial(dict(zip(box.names, map(float, anchor), strict=True)))
        mark_created(study)
    spec = worker_spec(config, subset, categories)
    if spec.score != "accuracy":
        note = " (early stop: paired race against the best)" if config.early_stop.enabled else ""
        say(f"fitness: mean {spec.score} over {len(subset)} items{note}")
    if config.workers.n > 1:
        pool: Any = RayPool(
            spec, config.workers.n, address=config.workers.ray_address, init_options=ray_init
        )
    else:
        pool = InProcessPool(spec)

    def decode(genome: list[float]) -> Any:
        return space.decode(np.asarray(genome, dtype=float))

    def describe(genome: list[float]) -> dict[str, Any]:
        return dict(space.describe(np.asarray(genome, dtype=float)))

    try:
        run_search(
            study,
            box,
            decode,
            pool,
            budget=config.trials,
            objective=objective,
            describe=describe,
            on_trial=on_trial,
            time_budget_s=config.time_budget_s,
        )
    finally:
        pool.close()
    local = pool.worker if isinstance(pool, InProcessPool) else None
    return _finish(config, study, out, every, categories, start, say, local)


def _finish(
    config: EvolveConfig,
    study: Any,
    out: Path,
    every: list[Any],
    categories: list[str],
    start: float,
    say: Callable[[str], None],
    local: CandidateWorker | None = None,
) -> EvolveResult:
    from darwinmerge.evaluate.results_io import write_json_atomic
    from darwinmerge.evaluate.tasks import filter_split, fresh_subset, stratified_subset

    records = trial_records(study)
    audit = stop_audit(records)
    fit = filter_split(every, "fitness", test_fraction=config.test_fraction)
    sub = stratified_subset(fit, config.fitness.subset, seed=config.fitness.subset_seed)
    score = fitness_score(config, sub)
    father = config.father
    father_keep = None
    selection: Selection | None = None
    child: Path | None = None
    tester: CandidateWorker | None = local
    if config.fitness.keep is not None:
        tester = local or _tester(config, categories, score)
        res = tester.evaluate_model(f"parent:{father}", sub)
        father_keep = res.categories[config.fitness.keep].score
    winner = choose_winner(
        study, keep=config.fitness.keep, father_keep=father_keep, tolerance=config.fitness.tolerance
    )
    rescored: list[dict[str, Any]] = []
    sel = config.select
    if winner is not None and sel.rescore_top > 1 and config.fitness.keep is None:
        fresh = fresh_subset(fit, sub, sel.rescore_items, seed=sel.rescore_seed)
        if fresh:
            tester = tester or _tester(config, categories, score)
            winner, rescored = rescore_winner(study, tester, fresh, top=sel.rescore_top)
            say(f"re-scored the best {len(rescored)} on {len(fresh)} fresh fitness items")
        else:
            say("select.rescore_top: no fitness item is left outside the search's subset")
    if winner is None:
        failed = {"format": "darwinmerge-evolution/1", "winner": None, "trials": records}
        write_json_atomic(out / EVOLUTION_FILE, failed, force=True)
        raise EvaluationError(
            f"{out}: no candidate finished (all {len(records)} trials failed or stopped); "
            f"see the errors in {EVOLUTION_FILE}"
        )
    # only now, after the search, is the test split read
    test_items = filter_split(every, "test", test_fraction=config.test_fraction)
    if test_items:
        tester = tester or _tester(config, categories, score)
        selection = honest_selection(
            study,
            tester,
            test_items,
            parents=list(config.parents),
            winner=winner,
            top_k=config.select.top_k,
            alpha=config.select.alpha,
        )
    winner_yaml = winner.user_attrs["recipe"]
    write_text_atomic(out / WINNER_FILE, winner_yaml)
    payload = {
        "format": "darwinmerge-evolution/1",
        "optimizer": config.optimizer.name,
        "categories": categories,
        "budget": config.trials,
        "winner": {
            "trial": winner.number,
            "values": winner.values,
            "genes": winner.user_attrs.get("genes"),
        },
        "early_stop": {**config.early_stop.model_dump(), **audit},
        "score": score,
        "rescore": rescored,
        "selection": selection.to_dict() if selection else None,
        "seconds": round(time.perf_counter() - start, 2),
        "trials": records,
    }
    write_json_atomic(out / EVOLUTION_FILE, payload, force=True)
    if config.select.write_child:
        child = _write_child(config, out, winner_yaml, selection, payload)
        say(f"wrote the winner to {child}")
    return EvolveResult(
        run_dir=out,
        trials=len(records),
        winner=winner.number,
        winner_fitness=float((winner.values or [float("nan")])[0]),
        selection=selection,
        child=child,
        early_stop=audit,
        seconds=time.perf_counter() - start,
    )


def _tester(config: EvolveConfig, categories: list[str], score: str) -> CandidateWorker:
    from darwinmerge.evaluate.tasks import TaskItem

    dummy = TaskItem(id="-", category="-", prompt="test", answer="-")
    spec = worker_spec(config, [dummy], categories, score)
    return CandidateWorker(spec, "selection")


def _summary_md(payload: dict[str, Any], selection: Selection | None) -> tuple[str, str]:
    rows = payload["trials"]
    done = sum(r["state"] == "complete" for r in rows)
    stopped = sum(r["state"] == "pruned" for r in rows)
    failed = sum(r["state"] == "fail" for r in rows)
    es = payload["early_stop"]
    search = (
        f"- optimizer: `{payload['optimizer']}`, {len(rows)} trials ({done} complete, "
        f"{stopped} stopped early, {failed} failed)\n"
        f"- fitness: mean {payload.get('score', 'accuracy')} over "
        f"{', '.join(payload['categories'])} (fitness split)\n"
        f"- winner: trial {payload['winner']['trial']}, fitness "
        f"{(payload['winner']['values'] or [float('nan')])[0]:.4f}\n"
        f"- early stopping saved {es['items_saved']} of "
        f"{es['items_used'] + es['items_saved']} item evaluations"
    )
    if payload.get("rescore"):
        again = payload["rescore"]
        search += (
            f"\n- the best {len(again)} re-scored on {again[0]['fresh_items']} fresh fitness "
            f"items; the winner is the best on the pooled items"
        )
    if selection is None:
        return search, "No test split items."
    lines = ["| model | test overall | 95% CI |", "|---|---|---|"]
    for p, s in selection.parents.items():
        o = s["overall"]
        lines.append(f"| parent {p} | {o['score']:.4f} | [{o['ci_low']:.4f}, {o['ci_high']:.4f}] |")
    for c in selection.candidates:
        o = c["test"]["overall"]
        lines.append(
            f"| trial {c['trial']} | {o['score']:.4f} | [{o['ci_low']:.4f}, {o['ci_high']:.4f}] |"
        )
    lines.append("")
    lines.append(
        f"Selection gap (winner fitness - test): {selection.selection_gap:+.4f} on "
        f"{selection.test_items} test items."
    )
    return search, "\n".join(lines)


def _write_child(
    config: EvolveConfig,
    out: Path,
    winner_yaml: str,
    selection: Selection | None,
    payload: dict[str, Any],
) -> Path:
    from darwinmerge.checkpoint import write_model_card
    from darwinmerge.merge.api import merge_to_disk
    from darwinmerge.merge.recipe import Recipe

    recipe = Recipe.from_yaml(winner_yaml, source=str(out / WINNER_FILE))
    final = out / "child"
    search, scores = _summary_md(payload, selection)
    with atomic_folder(final, force=True) as tmp:
        merge_to_disk(recipe, tmp, device="cpu", force=True, options=config.options)
        write_model_card(
            tmp,
            base_models=[p.path for p in recipe.parents],
            recipe_yaml=winner_yaml,
            title=f"{out.name}: darwinmerge evolved {recipe.method} merge",
            method=recipe.method,
            extra_sections={"Scores (test split)": scores, "Search": search},
        )
    return final
