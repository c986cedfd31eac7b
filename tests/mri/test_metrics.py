import math

import numpy as np
import torch

from darwinmerge.mri import (
    angular_distance_last,
    block_influence,
    bootstrap_dead_fraction,
    dead_fraction,
    expert_similarity,
    load_entropy,
    run_scan,
    token_share,
    utilisation,
)

from .conftest import tiny


def test_block_influence_is_token_weighted_per_category():
    cos_sum = np.array([[3.0, 1.0, 2.0]])  # one layer, three sequences
    tokens = np.array([4.0, 2.0, 2.0])
    cats = np.array([0, 0, 1])
    bi = block_influence(cos_sum, tokens, cats, 2)
    np.testing.assert_allclose(bi[:, 0], [1 - 4.0 / 6.0, 1 - 2.0 / 2.0])


def test_angular_distance_of_known_cosines():
    last = np.array([[1.0, 0.0, -1.0, 0.5]])
    ang = angular_distance_last(last, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(ang[:, 0], [(0 + 0.5) / 2, (1 + 1 / 3) / 2])


def test_utilisation_load_entropy_and_dead_fraction():
    counts = np.array([[[6.0, 2.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]]])  # S=1, N=2, E=4
    tokens = np.array([4.0, 1.0])  # top_k 2: 10 slots, fair share 2.5
    u = utilisation(counts, tokens, 2)
    np.testing.assert_allclose(u, [[8 / 2.5, 2 / 2.5, 0, 0]])
    assert dead_fraction(u, 0.05).tolist() == [0.5]
    q = np.array([0.8, 0.2])
    np.testing.assert_allclose(load_entropy(counts), [-(q * np.log(q)).sum() / math.log(4)])


def test_bootstrap_interval_over_sequences():
    N, E = 20, 4
    counts = np.zeros((1, N, E))
    counts[0, :, 0] = 1.0
    counts[0, :, 1] = 1.0
    counts[0, 0, 2] = 1.0  # expert 2 only ever used by sequence 0
    counts[0, :, 3] = 0.0  # expert 3 never used
    tokens = np.ones(N)
    point = dead_fraction(utilisation(counts, tokens, 2))
    assert point.tolist() == [0.25]
    ci = bootstrap_dead_fraction(counts, tokens, 2, resamples=1000, seed=3)
    assert ci.tolist() == [[0.25, 0.5]]  # sequence 0 missing in ~36% of resamples
    again = bootstrap_dead_fraction(counts, tokens, 2, resamples=1000, seed=3)
    np.testing.assert_array_equal(ci, again)
    narrow = bootstrap_dead_fraction(counts[:, :, [0, 1, 3]], tokens, 2, resamples=200)
    assert narrow.tolist() == [[1 / 3, 1 / 3]]


def test_expert_similarity_known_cases():
    assert abs(expert_similarity(torch.ones(3, 5)) - 1.0) < 1e-12
    assert abs(expert_similarity(torch.eye(4))) < 1e-12
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert abs(expert_similarity(v) - 1 / math.sqrt(2)) < 1e-12


def _force_expert_zero(model):
    """A constant direction in the residual stream (embedding column 0 = +100) and
    routers that read only that direction: expert 0 wins every token at every layer."""
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 100.0
        for layer in model.model.layers:
            w = layer.mlp.gate.weight
            w.zero_()
            w[0, 0] = 50.0
            w[1:, 0] = -50.0


def test_router_forced_to_one_expert(probe_batches):
    model = tiny("qwen3_5_moe", top_k=1)
    _force_expert_zero(model)
    scan = run_scan(model, probe_batches)
    assert scan.top_k == 1
    assert scan.router_entropy.max() < 1e-6
    assert scan.load_entropy.max() < 1e-12
    np.testing.assert_allclose(scan.utilisation[:, 0], 4.0)
    assert (scan.utilisation[:, 1:] == 0).all()
    np.testing.assert_allclose(scan.dead_fraction, 0.75)
    np.testing.assert_allclose(scan.dead_interval, 0.75)


def test_uniform_routing_gives_utilisation_one(probe_batches):
    model = tiny("qwen3_moe")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.zero_()
    scan = run_scan(model, probe_batches)
    # every token is a 4-way tie for 2 slots: tie-aware counts share the slots equally
    np.testing.assert_allclose(scan.tie_fraction, 1.0)
    np.testing.assert_allclose(scan.utilisation, 1.0, atol=1e-12)
    np.testing.assert_allclose(scan.prob_share, 1.0, atol=1e-12)
    np.testing.assert_allclose(scan.router_entropy, 1.0, atol=1e-12)
    np.testing.assert_allclose(scan.load_entropy, 1.0, atol=1e-12)
    assert (scan.dead_fraction == 0).all() and (scan.dead_interval == 0).all()
    # the router's own top-k breaks the tie by index: still k slots per token
    np.testing.assert_allclose(scan.utilisation_hard.mean(1), 1.0)


def test_absolute_dead_definition_is_the_relative_one_rescaled():
    """Token share f = u * k / E, so "below a of all tokens" is "below a * E / k of a fair
    share": same dead fraction and same bootstrap interval."""
    rng = np.random.default_rng(0)
    S, N, E, k = 3, 40, 16, 2
    counts = np.zeros((S, N, E))
    for s in range(S):
        for n in range(N):
            probs = rng.dirichlet(np.full(E, 0.3))  # skewed routing
            counts[s, n] = rng.multinomial(5 * k, probs)  # 5 tokens, k slots each
    tokens = np.full(N, 5.0)
    share = token_share(counts, tokens)
    np.testing.assert_allclose(share.sum(-1), k)
    np.testing.assert_allclose(share, utilisation(counts, tokens, k) * k / E)
    a = 0.05
    rel = dead_fraction(utilisation(counts, tokens, k), a * E / k)
    np.testing.assert_array_equal(dead_fraction(share, a), rel)
    assert (rel > dead_fraction(utilisation(counts, tokens, k), 0.05)).any()  # stricter
    ci_abs = bootstrap_dead_fraction(counts, tokens, k, a, resamples=300, seed=1, absolute=True)
    ci_rel = bootstrap_dead_fraction(counts, tokens, k, a * E / k, resamples=300, seed=1)
    np.testing.assert_allclose(ci_abs, ci_rel)


def test_scan_reports_both_dead_definitions(probe_batches):
    model = tiny("qwen3_5_moe", top_k=1)
    _force_expert_zero(model)
    scan = run_scan(model, probe_batches)
    np.testing.assert_allclose(scan.token_share[:, 0], 1.0)  # every token routes to 0
    np.testing.assert_allclose(scan.dead_fraction_abs, 0.75)
    np.testing.assert_allclose(scan.dead_interval_abs, 0.75)
    assert scan.dead_abs_threshold == 0.05
