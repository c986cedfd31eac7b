"""MRI metrics: pure functions from recorded per-sequence sums to per-layer numbers.

Shapes: ``L`` layers, ``N`` probe sequences, ``C`` categories, ``S`` sparse (MoE) layers,
``E`` experts. Inputs and outputs are NumPy float64 arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from darwinmerge.mri.config import DEAD_ABS_THRESHOLD, DEAD_THRESHOLD

__all__ = [
    "DEAD_ABS_THRESHOLD",
    "DEAD_THRESHOLD",
    "angular_distance_last",
    "block_influence",
    "bootstrap_dead_fraction",
    "dead_fraction",
    "expert_similarity",
    "load_entropy",
    "router_entropy",
    "token_share",
    "utilisation",
]


def _per_category(values: np.ndarray, seq_category: np.ndarray, num_categories: int) -> np.ndarray:
    """Sum ``values`` [..., N] over the sequences of each category -> [C, ...]."""
    out = np.zeros((num_categories,) + values.shape[:-1], dtype=np.float64)
    for c in range(num_categories):
        out[c] = values[..., seq_category == c].sum(-1)
    return out


def block_influence(
    cos_sum: np.ndarray, tokens: np.ndarray, seq_category: np.ndarray, num_categories: int
) -> np.ndarray:
    """BI[c, l] = 1 - (sum over real tokens of category c of cos(x_l, x_{l+1})) / tokens."""
    num = _per_category(cos_sum, seq_category, num_categories)  # [C, L]
    den = _per_category(tokens[None, :], seq_category, num_categories)  # [C, 1]
    return 1.0 - num / np.maximum(den, 1.0)


def angular_distance_last(
    last_cos: np.ndarray, seq_category: np.ndarray, num_categories: int
) -> np.ndarray:
    """Mean over the sequences of each category of arccos(cos on the last real token)/pi."""
    ang = np.arccos(np.clip(last_cos, -1.0, 1.0)) / np.pi  # [L, N]
    num = _per_category(ang, seq_category, num_categories)
    den = np.bincount(seq_category, minlength=num_categories)[:, None]
    return num / np.maximum(den, 1)


def router_entropy(entropy_sum: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Mean over all real tokens of H/log E per sparse layer -> [S]."""
    return entropy_sum.sum(-1) / max(float(tokens.sum()), 1.0)


def load_entropy(counts: np.ndarray) -> np.ndarray:
    """Normalised entropy of the aggregate expert load (counts summed over sequences)."""
    load = counts.sum(1)  # [S, E]
    E = load.shape[-1]
    q = load / np.maximum(load.sum(-1, keepdims=True), 1e-300)
    h = -(q * np.log(np.where(q > 0, q, 1.0))).sum(-1)
    return h / np.log(E) if E > 1 else np.zeros_like(h)


def utilisation(counts: np.ndarray, tokens: np.ndarray, top_k: int) -> np.ndarray:
    """u[s, e] = (tokens routed to e) / (tokens * top_k / E); 1.0 is a fair share."""
    E = counts.shape[-1]
    fair = max(float(tokens.sum()), 1.0) * top_k / E
    return counts.sum(1) / fair


def token_share(counts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """f[s, e] = (tokens routed to e) / tokens: the share of all tokens whose top-k holds
    e (sums to k over experts; ``f = utilisation * k / E``)."""
    return counts.sum(1) / max(float(tokens.sum()), 1.0)


def dead_fraction(util: np.ndarray, threshold: float = DEAD_THRESHOLD) -> np.ndarray:
    """Share of experts per layer whose utilisation (or token share) is below ``threshold``."""
    return (util < threshold).mean(-1)


def bootstrap_dead_fraction(
    counts: np.ndarray,
    tokens: np.ndarray,
    top_k: int,
    threshold: float = DEAD_THRESHOLD,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    absolute: bool = False,
) -> np.ndarray:
    """Percentile bootstrap interval of the dead fraction per layer, resampling probe
    sequences with replacement -> [S, 2] (low, high). ``absolute``: ``threshold`` applies
    to the token share (:func:`token_share`) instead of the utilisation."""
    S, N, E = counts.shape
    if N == 0 or S == 0:
        return np.zeros((S, 2))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, N, size=(resamples, N))
    weights = np.zeros((resamples, N))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    per_seq = counts.transpose(1, 0, 2).reshape(N, S * E)  # [N, S*E]
    load = (weights @ per_seq).reshape(resamples, S, E)
    fair = np.maximum(weights @ tokens, 1.0) * (1.0 if absolute else top_k / E)  # [R]
    dead = (load / fair[:, None, None] < threshold).mean(-1)  # [R, S]
    alpha = (1.0 - level) / 2
    return np.stack(
        [np.quantile(dead, alpha, axis=0), np.quantile(dead, 1 - alpha, axis=0)], axis=-1
    )


def expert_similarity(flat: torch.Tensor) -> float:
    """Mean pairwise cosine (off-diagonal) of the rows of ``flat`` [E, D]."""
    E = flat.shape[0]
    if E < 2:
        return float("nan")
    v = flat.double()
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    g = v @ v.T
    return float((g.sum() - g.diagonal().sum()) / (E * (E - 1)))
