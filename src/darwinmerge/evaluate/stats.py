"""Intervals and paired tests for accuracies (pure functions, no I/O).

* :func:`wilson_interval` - Wilson score interval for k successes in n trials.
* :func:`macro_interval` - the headline score, the unweighted mean of per-category
  accuracies, with a normal-approximation interval whose per-category variances use
  Agresti-Coull adjusted proportions (never zero, even at 0% or 100%).
* :func:`mcnemar_exact` - exact McNemar test (two-sided binomial on discordant pairs).
* :func:`stratified_sign_test` - paired test of a macro-average difference: the exact
  distribution, under "A and B are exchangeable on every item", of
  sum_c (a_only_c - b_only_c) / n_c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "Z95",
    "wilson_interval",
    "macro_interval",
    "mcnemar_exact",
    "stratified_sign_test",
]

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: centre (p + z^2/2n) / (1 + z^2/n), half-width
    z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2), with p = k/n. ``n == 0`` gives (0, 1)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def macro_interval(counts: Sequence[tuple[int, int]], z: float = Z95) -> tuple[float, float, float]:
    """(score, low, high) for the mean of per-category accuracies k_c / n_c.

    With one category this is that category's accuracy and Wilson interval. With C > 1:
    score = (1/C) sum_c k_c/n_c; SE = (1/C) sqrt(sum_c q_c (1 - q_c) / (n_c + z^2)) with
    q_c = (k_c + z^2/2) / (n_c + z^2); interval = score -+ z SE clipped to [0, 1].
    Categories with n_c = 0 are left out.
    """
    counts = [(k, n) for k, n in counts if n > 0]
    if not counts:
        return float("nan"), 0.0, 1.0
    if len(counts) == 1:
        k, n = counts[0]
        low, high = wilson_interval(k, n, z)
        return k / n, low, high
    c = len(counts)
    score = sum(k / n for k, n in counts) / c
    z2 = z * z
    var = 0.0
    for k, n in counts:
        q = (k + z2 / 2) / (n + z2)
        var += q * (1 - q) / (n + z2)
    se = math.sqrt(var) / c
    return score, max(0.0, score - z * se), min(1.0, score + z * se)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: with n = b + c discordant pairs,
    p = min(1, 2 * sum_{i <= min(b, c)} C(n, i) / 2^n). ``n == 0`` gives 1."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def _binomial_half_pmf(m: int) -> np.ndarray:
    """P(X = x) for X ~ Binomial(m, 1/2), x = 0..m, computed in log space."""
    x = np.arange(m + 1)
    logp = (
        math.lgamma(m + 1)
        - np.array([math.lgamma(i + 1) + math.lgamma(m - i + 1) for i in x])
        - m * math.log(2.0)
    )
    return np.exp(logp)


def stratified_sign_test(
    strata: Sequence[tuple[int, int, int]],
    *,
    max_support: int = 2_000_000,
    draws: int = 200_000,
    seed: int = 0,
) -> float:
    """Two-sided p-value for T = sum_c (b_c - c_c) / n_c from strata (b_c, c_c, n_c):
    b_c items only A got right, c_c items only B got right, n_c items in the category.

    Under H0 each discordant pair is A's or B's with probability 1/2, independently, so
    b_c ~ Binomial(m_c, 1/2) with m_c = b_c + c_c. On integer weights w_c = L / n_c
    (L = lcm of the n_c) the exact distribution is a convolution; p = P(|T| >= |t|).
    If that support exceeds ``max_support`` points a seeded Monte Carlo estimate with
    ``draws`` samples is used. With one stratum, or equal n_c, this equals
    :func:`mcnemar_exact` on the pooled counts.
    """
    strata = [(b, c, n) for b, c, n in strata if n > 0]
    if not strata or all(b + c == 0 for b, c, _ in strata):
        return 1.0
    lcm = 1
    for _, _, n in strata:
        lcm = lcm * n // math.gcd(lcm, n)
    weights = [lcm // n for _, _, n in strata]
    t_obs = sum(w * (b - c) for w, (b, c, _) in zip(weights, strata, strict=True))
    support = sum(2 * w * (b + c) for w, (b, c, _) in zip(weights, strata, strict=True)) + 1
    if support <= max_support:
        # distribution of S = sum_c w_c * b_c (T = 2 S - sum_c w_c m_c), offset 0
        dist = np.ones(1)
        for w, (b, c, _) in zip(weights, strata, strict=True):
            m = b + c
            if m == 0:
                continue
            pmf = _binomial_half_pmf(m)
            spread = np.zeros(w * m + 1)
            spread[::w] = pmf
            dist = np.convolve(dist, spread)
        total_m = sum(w * (b + c) for w, (b, c, _) in zip(weights, strata, strict=True))
        t_values = 2 * np.arange(dist.size) - total_m
        mask = np.abs(t_values) >= abs(t_obs)
        p = float(dist[mask].sum())
    else:
        rng = np.random.default_rng(seed)
        t_sim = np.zeros(draws)
        for b, c, n in strata:
            m = b + c
            if m:
                t_sim += (2 * rng.binomial(m, 0.5, size=draws) - m) / n
        t_real = sum((b - c) / n for b, c, n in strata)
        hits = int(np.sum(np.abs(t_sim) >= abs(t_real) - 1e-12))
        p = (hits + 1) / (draws + 1)
    return min(1.0, p)
