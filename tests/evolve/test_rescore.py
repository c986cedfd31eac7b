"""Re-scoring the best candidates on fresh fitness items, on a synthetic objective with
known noise: it picks the truly best candidate more often than plain best-of-N."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest

from darwinmerge.evaluate.tasks import TaskItem, fresh_subset, split_of, stratified_subset
from darwinmerge.evolve.select import pooled_fitness, rescore_winner


class NoisyWorker:
    """Fitness of candidate ``recipe`` on n fresh items: Binomial(n, q) / n."""

    def __init__(self, quality: dict[str, float], rng: np.random.Generator) -> None:
        self.quality, self.rng, self.calls = quality, rng, 0

    def fitness(self, recipe: str, items: Any) -> tuple[float, int]:
        self.calls += 1
        n = len(items)
        return float(self.rng.binomial(n, self.quality[recipe]) / n), n


def _study(search: list[float], n_items: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for i, f in enumerate(search):
        study.add_trial(
            optuna.trial.create_trial(
                value=f,
                user_attrs={"recipe": f"r{i}", "genome": [i / 100], "items_used": n_items},
            )
        )
    return study


def test_rescoring_picks_the_truly_better_candidate_more_often() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(0)
    n_cand, n_items, reps = 20, 200, 200
    fresh = [TaskItem(str(i), "c", "p", "a") for i in range(n_items)]
    plain_hits = rescored_hits = 0
    plain_q: list[float] = []
    rescored_q: list[float] = []
    for _ in range(reps):
        # true qualities 1-3 items apart out of 200 around 0.8; one fitness has SE ~0.03
        q = 0.8 + rng.normal(0.0, 0.012, n_cand)
        quality = {f"r{i}": float(v) for i, v in enumerate(q)}
        search = [float(rng.binomial(n_items, v) / n_items) for v in q]
        study = _study(search, n_items)
        worker = NoisyWorker(quality, rng)
        winner, rows = rescore_winner(study, worker, fresh, top=5)
        assert winner is not None and len(rows) == 5 and worker.calls == 5
        pick_plain = int(np.argmax(search))
        pick_rescored = int(winner.user_attrs["recipe"][1:])
        best = int(np.argmax(q))
        plain_hits += pick_plain == best
        rescored_hits += pick_rescored == best
        plain_q.append(q[pick_plain])
        rescored_q.append(q[pick_rescored])
        for row in rows:  # the winner is the best pooled value of the re-scored ones
            assert row["pooled_fitness"] == pytest.approx(
                pooled_fitness(row["search_fitness"], n_items, row["fresh_fitness"], n_items)
            )
        assert max(r["pooled_fitness"] for r in rows) == pytest.approx(
            next(r["pooled_fitness"] for r in rows if r["trial"] == winner.number)
        )
    # seeded simulation: the re-scored pick is the true best clearly more often, and its
    # true quality is higher on average (paired over the same replicates)
    print(f"true best picked: plain {plain_hits}/{reps}, re-scored {rescored_hits}/{reps}")
    assert rescored_hits > 1.2 * plain_hits, (plain_hits, rescored_hits)
    gain = np.asarray(rescored_q) - np.asarray(plain_q)
    assert gain.mean() > 2.0 * gain.std(ddof=1) / np.sqrt(reps)


def test_fresh_subset_leaves_the_search_items_and_the_test_split_out() -> None:
    items = [TaskItem(f"id{i}", "ab"[i % 2], "p", "a") for i in range(400)]
    fitness = [it for it in items if split_of(it.id) == "fitness"]
    used = stratified_subset(fitness, 20, seed=0)
    fresh = fresh_subset(fitness, used, 30, seed=1)
    assert len(fresh) == 60 and not {it.id for it in fresh} & {it.id for it in used}
    assert all(split_of(it.id) == "fitness" for it in fresh)
    assert fresh_subset(fitness, fitness, 5) == []
