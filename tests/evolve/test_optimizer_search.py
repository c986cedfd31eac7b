"""The ask/tell search on a synthetic objective: CMA-ES starts from the prior, improves,
keeps its state in the storage (a new process continues the same distribution),
samplers, failed and repeated candidates."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.api import blind_box
from darwinmerge.evolve.optimizer import OPTIMIZERS, SearchBox, make_sampler
from darwinmerge.evolve.runner import Objective, fail_stale_trials, finished_count, run_search
from darwinmerge.evolve.study import create_study, load_study, open_storage, stored_box

from .search_helpers import SyntheticPool, SyntheticSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

TARGET = [0.8, 0.2, 0.7, 0.3]
OBJ = Objective(("all",))


def _study(tmp_path, box, name="cmaes", seed=0, popsize=6):
    storage = open_storage(tmp_path)
    sampler = make_sampler(name, box, seed=seed, options={"popsize": popsize})
    return storage, create_study(storage, sampler, box=box, directions=["maximize"], attrs={})


def _run(study, box, pool, budget, space=None):
    space = space or SyntheticSpace(len(box.names))
    run_search(
        study, box, space.decode, pool, budget=budget, objective=OBJ, describe=space.describe
    )


def _values(study):
    return [t.value for t in study.trials if t.value is not None]


def test_cmaes_starts_from_the_prior_with_per_gene_steps(tmp_path):
    box = SearchBox(("g0", "g1"), (0.2, 0.6), (0.01, 0.15), (0.0, 0.0), (1.0, 1.0))
    _, study = _study(tmp_path, box, popsize=40)
    pool = SyntheticPool([0.5, 0.5])
    _run(study, box, pool, budget=40)  # one generation: all drawn from the initial law
    xs = np.array([[t.params["g0"], t.params["g1"]] for t in study.trials])
    assert abs(xs[:, 0].mean() - 0.2) < 0.01 and abs(xs[:, 1].mean() - 0.6) < 0.08
    assert 0.005 < xs[:, 0].std() < 0.02  # sigma 0.01
    assert 0.08 < xs[:, 1].std() < 0.25  # sigma 0.15
    # a narrowed box keeps every sample inside it
    narrow = box.narrowed({"g1": (0.5, 0.7)})
    _, study2 = _study(tmp_path / "n", narrow, popsize=20)
    _run(study2, narrow, pool, budget=20)
    assert all(0.5 <= t.params["g1"] <= 0.7 for t in study2.trials)


def test_search_improves_a_synthetic_objective(tmp_path):
    box = blind_box(["g0", "g1", "g2", "g3"])
    _, study = _study(tmp_path, box)
    _run(study, box, SyntheticPool(TARGET), budget=60)
    values = _values(study)
    first_gen, last_gen = max(values[:6]), max(values[-6:])
    assert max(values) > 0.97  # target fitness 1; the blind start averages ~0.7
    assert np.mean(values[-12:]) > np.mean(values[:6]) + 0.1
    assert last_gen >= first_gen
    best = study.best_trial.params
    assert np.allclose([best[f"g{i}"] for i in range(4)], TARGET, atol=0.15)


def test_resume_continues_the_same_cma_distribution(tmp_path):
    box = SearchBox(("g0", "g1"), (0.3, 0.3), (0.2, 0.2), (0.0, 0.0), (1.0, 1.0))
    storage, study = _study(tmp_path, box, popsize=4)
    _run(study, box, SyntheticPool([0.9, 0.9]), budget=12)
    sampler_a = study.sampler
    # a trial left running by a killed process: marked failed on resume, nothing else lost
    study.ask()
    # "another process": new storage object, new sampler, the box read from the study
    storage2 = open_storage(tmp_path)
    box2 = stored_box(storage2)
    assert box2 == box
    study2 = load_study(storage2, make_sampler("cmaes", box2, seed=5, options={"popsize": 4}))
    assert fail_stale_trials(study2) == [12]
    assert finished_count(study2) == 13
    completed = sampler_a._get_trials(study2)
    restored = study2.sampler._restore_optimizer(completed)
    original = sampler_a._restore_optimizer(sampler_a._get_trials(study))
    assert restored is not None and restored.generation == original.generation >= 2
    assert np.array_equal(restored._mean, original._mean)
    assert np.array_equal(restored._C, original._C) and restored._sigma == original._sigma
    # the distribution moved from the prior mean toward the optimum and continues
    assert np.all(restored._mean > 0.35)
    _run(study2, box2, SyntheticPool([0.9, 0.9]), budget=21)
    gens = [t.system_attrs.get("cma:generation") for t in study2.trials[13:]]
    assert min(g for g in gens if g is not None) >= original.generation


@pytest.mark.parametrize("name", ["random", "tpe", "cmaes"])
def test_every_single_objective_sampler_stays_in_the_box(tmp_path, name):
    assert set(OPTIMIZERS.names()) >= {"cmaes", "random", "tpe", "nsga2"}
    box = SearchBox(("g0", "g1"), (0.3, 0.5), (0.1, 0.1), (0.1, 0.4), (0.6, 0.9))
    _, study = _study(tmp_path, box, name=name, popsize=4)
    _run(study, box, SyntheticPool([0.5, 0.5]), budget=10)
    assert len(_values(study)) == 10
    for t in study.trials:
        assert 0.1 <= t.params["g0"] <= 0.6 and 0.4 <= t.params["g1"] <= 0.9


def test_nsga2_two_objectives(tmp_path):
    box = blind_box(["g0", "g1"])
    storage = open_storage(tmp_path)
    study = create_study(
        storage,
        make_sampler("nsga2", box, seed=0, options={"popsize": 4}),
        box=box,
        directions=["maximize", "maximize"],
        attrs={},
    )
    space = SyntheticSpace(2)
    run_search(
        study,
        box,
        space.decode,
        SyntheticPool([0.5, 0.5]),
        budget=8,
        objective=Objective(("all",), keep="all"),
    )
    assert all(len(t.values) == 2 for t in study.trials)
    assert study.best_trials


def test_failed_and_repeated_candidates_never_end_the_search(tmp_path):
    box = blind_box(["g0", "g1"])
    _, study = _study(tmp_path, box, name="random")
    space = SyntheticSpace(2, fail_above=0.8)  # decode fails for g0 > 0.8
    pool = SyntheticPool([0.5, 0.5], nan_above=0.8)  # "NaN logits" for g1 > 0.8
    run_search(study, box, space.decode, pool, budget=25, objective=OBJ)
    states = [t.state.name for t in study.trials]
    assert len(states) == 25 and "FAIL" in states and "COMPLETE" in states
    for t in study.trials:
        if t.params["g0"] > 0.8:
            assert t.state.name == "FAIL" and "too large" in t.user_attrs["error"]
        elif t.params["g1"] > 0.8:
            assert t.state.name == "FAIL" and t.user_attrs["error"] == "NaN/Inf logits"
    # a genome seen before is answered from the study, without evaluation
    done = next(t for t in study.trials if t.state.name == "COMPLETE")
    study.enqueue_trial(done.params)
    calls = len(pool.calls)
    run_search(study, box, space.decode, pool, budget=26, objective=OBJ)
    again = study.trials[-1]
    assert len(pool.calls) == calls  # not evaluated again
    assert again.user_attrs["cached_from"] == done.number and again.value == done.value


def test_bad_boxes_are_one_line_errors():
    box = blind_box(["a", "b"])
    with pytest.raises(ConfigError, match="unknown gene 'c'"):
        box.narrowed({"c": (0.1, 0.2)})
    with pytest.raises(ConfigError, match="mean 1.5 is outside"):
        SearchBox(("a",), (1.5,), (0.1,), (0.0,), (1.0,)).check()
