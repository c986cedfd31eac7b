"""The MRI-trust gene on a synthetic objective: a confidently wrong prior traps the plain
guided search in its box; the trusted search escapes it, and with a right prior it keeps
the prior's head start. The codec: tau = 1 is the prior's genome, tau = 0 the free one."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from darwinmerge.evolve.api import blind_box
from darwinmerge.evolve.optimizer import SearchBox, make_sampler
from darwinmerge.evolve.prior import Prior
from darwinmerge.evolve.runner import Objective, run_search
from darwinmerge.evolve.space_trust import TRUST_GENE, TrustedSpace, trusted_prior
from darwinmerge.evolve.study import create_study

from .search_helpers import SyntheticPool, SyntheticSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)
D = 8
NAMES = [f"g{i}" for i in range(D)]


def _best(box, space, target, seed, budget=40, enqueue=()):
    storage = optuna.storages.InMemoryStorage()
    sampler = make_sampler("cmaes", box, seed=seed, options={})
    study = create_study(storage, sampler, box=box, directions=["maximize"], attrs={})
    for genome in enqueue:  # as run_evolution enqueues the start and the anchor
        study.enqueue_trial(dict(zip(box.names, map(float, genome), strict=True)))
    run_search(
        study,
        box,
        space.decode,
        SyntheticPool(target),
        budget=budget,
        objective=Objective(("all",)),
        describe=space.describe,
    )
    return max(t.value for t in study.trials if t.value is not None)


def _confident(p):
    """What the MRI prior gives a gene it is sure of: sigma 0.05, box mean +- 0.2."""
    return Prior(p, np.full(D, 0.05), np.clip(p - 0.2, 0, 1), np.clip(p + 0.2, 0, 1), ("",) * D)


def test_codec_blends_the_prior_and_reaches_every_genome() -> None:
    p = np.linspace(0.1, 0.9, D)
    space = TrustedSpace(SyntheticSpace(D), p)
    x = np.full(D + 1, 0.3)
    assert space.gene_names[-1] == TRUST_GENE and space.dim == D + 1
    assert np.allclose(space.effective([*x[:-1], 1.0]), p)  # full trust: the prior
    assert np.allclose(space.effective([*x[:-1], 0.0]), 0.3)  # no trust: the free genome
    assert np.allclose(space.effective(x), 0.3 * p + 0.7 * 0.3)
    assert space.describe(x)[TRUST_GENE] == pytest.approx(0.3)
    start = trusted_prior(_confident(p))
    assert np.allclose(start.lower, 0.0) and np.allclose(start.upper, 1.0)  # full box
    assert start.mean[-1] == pytest.approx(0.5) and np.allclose(start.mean[:-1], 0.5)
    assert np.allclose(space.effective(space.start_genome), p)  # enqueued first genome


@pytest.mark.parametrize("wrong", [True, False])
def test_trust_gene_escapes_a_wrong_prior_and_keeps_a_right_one(wrong) -> None:
    blind, guided, trusted, anchored, floor = [], [], [], [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        target = rng.uniform(0.6, 0.95, D)
        # wrong: every gene mirrored to the other side; right: a little off the target
        p = 1.0 - target if wrong else np.clip(target + rng.normal(0, 0.03, D), 0, 1)
        prior = _confident(p)
        inner = SyntheticSpace(D)
        space = TrustedSpace(inner, p)
        tbox = SearchBox.from_prior(space.gene_names, trusted_prior(prior))
        blind.append(_best(blind_box(NAMES), inner, target, seed))
        guided.append(_best(SearchBox.from_prior(NAMES, prior), inner, target, seed))
        trusted.append(_best(tbox, space, target, seed))
        # optimizer.anchor: the prior's start, then the blind start, in a box holding both
        neutral = np.full(D, 0.5)
        abox = SearchBox.from_prior(NAMES, prior).including(neutral)
        anchored.append(_best(abox, inner, target, seed, enqueue=(p, neutral)))
        floor.append(1.0 - 4.0 * float(np.mean((neutral - target) ** 2)))
    blind_m, guided_m, trusted_m = map(np.median, (blind, guided, trusted))
    # the anchor is a floor: never below the blind start, whatever the prior
    assert all(a >= f - 1e-12 for a, f in zip(anchored, floor, strict=True))
    if wrong:  # the plain guided search is trapped in its box; the trusted one is not
        assert guided_m < blind_m - 0.4
        assert trusted_m > guided_m + 0.3 and min(trusted) > max(guided)
        assert np.median(anchored) > guided_m + 0.5  # out of the trap, not to blind's level
    else:  # a right prior: both guided searches beat blind, the trusted one by as much
        assert guided_m > blind_m + 0.03 and trusted_m > blind_m + 0.03
        assert trusted_m > guided_m - 0.01
        assert np.median(anchored) > guided_m - 0.01  # the anchor costs a right prior nothing
