"""Intervals and paired tests against hand-computed and scipy-checked values
(scipy 1.17 binomtest / proportion_ci(method='wilson') agreed to 1e-15)."""

from __future__ import annotations

import itertools
import math

import pytest

from darwinmerge.evaluate import (
    macro_interval,
    mcnemar_exact,
    stratified_sign_test,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775327998628893),
        (10, 10, 0.7224672001371107, 1.0),
        (7, 10, 0.39677814746114526, 0.892208732593699),
        (81, 263, 0.2552885198782742, 0.36620957698280004),
        (1, 1, 0.20654931437723745, 1.0),
    ],
)
def test_wilson_against_reference(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-12)


def test_wilson_by_hand_and_edges() -> None:
    # k=5, n=10, z=2: centre (0.5 + 0.2)/1.4 = 0.5; half = 2/1.4*sqrt(0.025+0.01) = 0.267261
    low, high = wilson_interval(5, 10, z=2.0)
    assert (low, high) == pytest.approx((0.5 - 0.2672612419, 0.5 + 0.2672612419), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
        (9, 1, 0.021484375),
        (0, 5, 0.0625),  # 2 / 32
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 1024
        (3, 3, 1.0),
        (0, 0, 1.0),
        (10, 25, 0.016673847800120715),
        (40, 60, 0.05688793364098089),
    ],
)
def test_mcnemar_exact(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_macro_interval_by_hand() -> None:
    # categories 8/10 and 3/20: mean 0.475; q1 = 9.9207/13.8415, q2 = 4.9207/23.8415
    score, low, high = macro_interval([(8, 10), (3, 20)])
    assert score == pytest.approx(0.475)
    assert (low, high) == pytest.approx((0.3311795417, 0.6188204583), abs=1e-9)
    # one category: exactly Wilson
    assert macro_interval([(7, 10)]) == pytest.approx((0.7, *wilson_interval(7, 10)))
    # perfect categories still get a non-degenerate interval
    s, lo, hi = macro_interval([(10, 10), (20, 20)])
    assert s == 1.0 and hi == 1.0 and 0.8 < lo < 0.95


def _brute_force(strata: list[tuple[int, int, int]]) -> float:
    t_obs = sum((b - c) / n for b, c, n in strata)
    ms = [b + c for b, c, _ in strata]
    total = 0.0
    for xs in itertools.product(*[range(m + 1) for m in ms]):
        t = sum((2 * x - m) / n for x, m, (_, _, n) in zip(xs, ms, strata, strict=True))
        if abs(t) >= abs(t_obs) - 1e-12:
            total += math.prod(math.comb(m, x) / 2**m for x, m in zip(xs, ms, strict=True))
    return total


def test_stratified_sign_test() -> None:
    # equal category sizes: same as McNemar on the pooled discordant counts
    assert stratified_sign_test([(3, 7, 50), (5, 2, 50), (1, 4, 50)]) == pytest.approx(
        mcnemar_exact(9, 13), rel=1e-9
    )
    assert stratified_sign_test([(1, 9, 30)]) == pytest.approx(0.021484375, rel=1e-9)
    strata = [(2, 3, 4), (1, 0, 3), (0, 2, 5)]
    assert stratified_sign_test(strata) == pytest.approx(_brute_force(strata), rel=1e-9)
    assert _brute_force(strata) == pytest.approx(0.7265625)
    # the Monte Carlo fallback agrees with the exact convolution
    uneven = [(3, 7, 40), (5, 2, 50), (1, 4, 30)]
    exact = stratified_sign_test(uneven)
    approx = stratified_sign_test(uneven, max_support=1)
    assert exact == pytest.approx(0.25659, abs=1e-4)
    assert approx == pytest.approx(exact, abs=0.005)
    assert stratified_sign_test([(0, 0, 10)]) == 1.0
