"""The ask/tell loop: the optimizer proposes genomes, workers score them, the study keeps
everything (no history lives in this module).

Each round asks one trial per worker, decodes every genome to a recipe, answers a genome
already seen from the study, sends the rest to the pool, and tells the results:
finished candidates as complete trials (one value, or two for NSGA-II), stopped ones as
pruned trials with the fitness they reached (reported at step = items scored), failed
ones (bad decode, merge error, NaN/Inf logits, a crash) as failed trials. On resume the
trials a killed run left running are marked failed (the only work lost) and the loop
continues until the budget counts that many finished trials.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from darwinmerge.evolve.optimizer import SearchBox, distributions, genome_from_params
from darwinmerge.evolve.study import find_seen
from darwinmerge.evolve.workers import CandidateRequest, CandidateResult

__all__ = ["Objective", "TrialEvent", "run_search", "fail_stale_trials", "finished_count"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class Objective:
    """Fitness = mean score over ``categories`` (accuracy, or a continuous score's mean
    value); with ``keep`` (NSGA-II) a second objective, the score on that category."""

    categories: tuple[str, ...]
    keep: str | None = None

    def values(self, result: CandidateResult) -> list[float]:
        out = [result.fitness]
        if self.keep is not None and result.values:
            out.append(result.values.get(self.keep, float("nan")))
        elif self.keep is not None:
            k, n = result.categories.get(self.keep, [0, 0])
            out.append(k / n if n else float("nan"))
        return out

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * (2 if self.keep else 1)


@dataclass(frozen=True)
class TrialEvent:
    """What the progress callback gets after each trial."""

    number: int
    state: str
    fitness: float | None
    best: float | None
    finished: int
    budget: int
    merge_seconds: float
    eval_seconds: float
    items_used: int
    cached: bool = False
    error: str | None = None

    def fitness_text(self, digits: int = 3) -> str:
        """The fitness for a progress line: a stopped candidate's value is on the items
        it scored before the race stopped it (not comparable with ``best``), so it says so."""
        if self.fitness is None:
            return "-"
        text = f"{self.fitness:.{digits}f}"
        if self.state == "pruned" and not self.cached:
            text += f" on {self.items_used} items, stopped: behind the best"
        return text


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_FINISHED))


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark trials left running (a killed run) as failed; returns their numbers."""
    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in stale:
        study._storage.set_trial_user_attr(
            study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number),
            "error",
            "in flight when the run was stopped",
        )
        study.tell(number, state=TrialState.FAIL)
    return stale


def best_value(study: optuna.Study) -> float | None:
    if len(study.directions) > 1:
        return None
    values = [
        t.value
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    return max(values) if values else None


def incumbent_values(study: optuna.Study) -> tuple[float, ...] | None:
    """The per-item values (``item_values``) of the best complete trial that has them
    (a continuous score; one objective), or None: what the paired stop rule races a new
    candidate against. A trial answered from the cache has none; its source has."""
    if len(study.directions) > 1:
        return None
    best: optuna.trial.FrozenTrial | None = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.value is None or not math.isfinite(t.value) or "item_values" not in t.user_attrs:
            continue
        if best is None or t.value > (best.value or -math.inf):
            best = t
    return None if best is None else tuple(float(v) for v in best.user_attrs["item_values"])


def _record(trial: optuna.Trial, result: CandidateResult) -> None:
    per_category: dict[str, float | None] = (
        dict(result.values)
        if result.values
        else {c: (k / n if n else None) for c, (k, n) in result.categories.items()}
    )
    trial.set_user_attr("fitness", per_category)
    trial.set_user_attr("counts", result.categories)
    trial.set_user_attr("items_used", result.items_used)
    trial.set_user_attr("items_planned", result.items_planned)
    trial.set_user_attr("merge_seconds", round(result.merge_seconds, 4))
    trial.set_user_attr("eval_seconds", round(result.eval_seconds, 4))
    trial.set_user_attr("stopped", result.state == "pruned")
    trial.set_user_attr("worker", result.worker)
    if result.correct:  # per item, in the worker's item order: "1" right, "0" wrong
        trial.set_user_attr(
            "item_correct", "".join("1" if c else "0" for c in result.correct.values())
        )
    if result.item_values:  # per item, in the worker's item order (continuous score)
        trial.set_user_attr("item_values", [round(v, 7) for v in result.item_values])
    if result.stop_at is not None:
        trial.set_user_attr("ucb_stop_at", result.stop_at)
    if result.full_fitness is not None:
        trial.set_user_attr("full_fitness", result.full_fitness)
    if result.error:
        trial.set_user_attr("error", result.error)


def _tell(
    study: optuna.Study, trial: optuna.Trial, result: CandidateResult, obj: Objective
) -> None:
    _record(trial, result)
    if result.state == "complete":
        values = obj.values(result)
        if all(math.isfinite(v) for v in values):
            study.tell(trial, values if len(values) > 1 else values[0])
            return
        trial.set_user_attr("error", "objective value is not finite")
        study.tell(trial, state=TrialState.FAIL)
    elif result.state == "pruned" and len(study.directions) == 1:
        trial.report(result.fitness, step=max(1, result.items_used))
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


def _tell_cached(study: optuna.Study, trial: optuna.Trial, seen: optuna.trial.FrozenTrial) -> None:
    for key in ("fitness", "counts", "items_planned", "recipe", "genes"):
        if key in seen.user_attrs:
            trial.set_user_attr(key, seen.user_attrs[key])
    trial.set_user_attr("items_used", 0)
    trial.set_user_attr("merge_seconds", 0.0)
    trial.set_user_attr("eval_seconds", 0.0)
    trial.set_user_attr("cached_from", seen.number)
    if seen.state == TrialState.COMPLETE:
        assert seen.values is not None
        study.tell(trial, seen.values if len(seen.values) > 1 else seen.values[0])
    else:
        step = max(seen.intermediate_values)
        trial.report(seen.intermediate_values[step], step=step)
        trial.set_user_attr("stopped", True)
        study.tell(trial, state=TrialState.PRUNED)


def run_search(
    study: optuna.Study,
    box: SearchBox,
    decode: Callable[[list[float]], Any],
    pool: Any,
    *,
    budget: int,
    objective: Objective,
    describe: Callable[[list[float]], dict[str, Any]] | None = None,
    on_trial: Callable[[TrialEvent], None] | None = None,
    time_budget_s: float | None = None,
) -> None:
    """Run trials until ``budget`` trials of the study are finished (or the time budget
    is spent). ``decode(genome) -> Recipe``; ``pool.map(requests) -> results``."""
    dists = distributions(box)
    start = time.perf_counter()
    while finished_count(study) < budget:
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            break
        batch = min(pool.size, budget - finished_count(study))
        trials = [study.ask(dists) for _ in range(batch)]
        best = best_value(study)
        incumbent = incumbent_values(study)
        requests: list[CandidateRequest] = []
        pending: dict[int, optuna.Trial] = {}
        events: list[TrialEvent] = []
        for trial in trials:
            genome = genome_from_params(box, trial.params)
            trial.set_user_attr("genome", genome)
            seen = find_seen(study, genome, exclude=trial.number)
            if seen is not None:
                _tell_cached(study, trial, seen)
                events.append(_event(study, trial.number, budget, cached=True))
                continue
            try:
                if describe is not None:
                    trial.set_user_attr("genes", describe(genome))
                recipe = decode(genome)
                text = recipe.to_yaml()
            except Exception as exc:  # an undecodable genome is a failed trial
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
                study.tell(trial, state=TrialState.FAIL)
                events.append(_event(study, trial.number, budget))
                continue
            trial.set_user_attr("recipe", text)
            requests.append(CandidateRequest(trial.number, text, best, incumbent))
            pending[trial.number] = trial
        for result in pool.map(requests) if requests else []:
            _tell(study, pending[result.trial], result, objective)
            events.append(_event(study, result.trial, budget))
        if on_trial is not None:
            for event in sorted(events, key=lambda e: e.number):
                on_trial(event)


def _event(study: optuna.Study, number: int, budget: int, cached: bool = False) -> TrialEvent:
    t = study.trials[number]
    u = t.user_attrs
    value: float | None = None
    if t.values is not None:
        value = t.values[0]
    elif t.intermediate_values:
        value = t.intermediate_values[max(t.intermediate_values)]
    return TrialEvent(
        number=number,
        state=t.state.name.lower(),
        fitness=value,
        best=best_value(study),
        finished=finished_count(study),
        budget=budget,
        merge_seconds=float(u.get("merge_seconds", 0.0)),
        eval_seconds=float(u.get("eval_seconds", 0.0)),
        items_used=int(u.get("items_used", 0)),
        cached=cached,
        error=u.get("error"),
    )


def stop_audit(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summary of the early-stop rule over trial records: how many candidates it stopped
    (or, audited, would have stopped), the items that saves, and how many of those would
    have beaten the best fitness known when they were stopped (false stops)."""
    best = -math.inf
    stops = false_stops = saved = used = 0
    for r in records:
        if r.get("cached_from") is not None or r["state"] == "fail":
            continue
        used += int(r.get("items_used") or 0)
        planned = int(r.get("items_planned") or 0)
        stop_at = r.get("ucb_stop_at")
        full = r.get("full_fitness")
        if stop_at is not None:
            stops += 1
            saved += planned - int(stop_at)
            if full is not None and full > best:
                false_stops += 1
        value = full if full is not None else (r["values"] or [None])[0]
        if r["state"] == "complete" and value is not None:
            best = max(best, float(value))
    return {"stopped": stops, "false_stops": false_stops, "items_saved": saved, "items_used": used}
