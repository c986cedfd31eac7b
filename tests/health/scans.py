"""Hand-made :class:`Scan` objects: numpy arrays set directly, every other field filled."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from darwinmerge.health import Localization
from darwinmerge.merge import Recipe
from darwinmerge.mri import Scan

CATS = ["REASONING", "CODE"]
L = 4
A = np.array([[0.30, 0.10, 0.20, 0.40], [0.25, 0.12, 0.18, 0.35]])
B = np.array([[0.32, 0.14, 0.22, 0.30], [0.27, 0.10, 0.20, 0.33]])
MID = (A + B) / 2


def make_scan(
    bi: np.ndarray,
    *,
    name: str = "m",
    loss: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
    util: np.ndarray | None = None,
    categories: list[str] | None = None,
    sparse_layers: list[int] | None = None,
    n_seq: int = 4,
    tokens_per_seq: int = 10,
    dead_threshold: float = 0.05,
    **overrides: Any,
) -> Scan:
    """A scan with block influence ``bi`` [C, L]; MoE fields for ``sparse_layers`` (default
    every layer) with ``entropy`` [S] and utilisation ``util`` [S, E] (default 4 experts at
    a fair share)."""
    bi = np.asarray(bi, dtype=float)
    C, L = bi.shape
    cats = categories or CATS[:C]
    sparse = list(range(L)) if sparse_layers is None else sparse_layers
    S = len(sparse)
    util = np.ones((S, 4)) if util is None else np.asarray(util, dtype=float)
    E = util.shape[1] if S else 0
    entropy = np.full(S, 0.8) if entropy is None else np.asarray(entropy, dtype=float)
    dead = (util < dead_threshold).mean(1) if S else np.zeros(0)
    seq_cat = np.arange(n_seq) % C
    known: dict[str, Any] = dict(
        model=name,
        family="hand",
        categories=cats,
        num_layers=L,
        sparse_layers=sparse,
        num_experts=E,
        top_k=2 if S else 0,
        dead_threshold=dead_threshold,
        bootstrap={"resamples": 10, "seed": 0, "level": 0.95},
        bi=bi,
        bi_all=bi.mean(0),
        loss=np.ones(C) if loss is None else np.asarray(loss, dtype=float),
        router_entropy=entropy,
        utilisation=util,
        dead_fraction=dead,
        dead_interval=np.stack([dead, dead], 1) if S else np.zeros((0, 2)),
        seq_category=seq_cat,
        tokens=np.full(n_seq, float(tokens_per_seq)),
        nll_count=np.full(n_seq, float(tokens_per_seq - 1)),
        nll_sum=np.ones(n_seq),
        loss_tokens="completion",
    )
    known.update(overrides)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(Scan):
        if f.name in known:
            kwargs[f.name] = known[f.name]
        elif "ndarray" in str(f.type):
            kwargs[f.name] = np.zeros(0)
        elif "float" in str(f.type):
            kwargs[f.name] = 0.0
        elif "int" in str(f.type):
            kwargs[f.name] = 0
        elif "dict" in str(f.type):
            kwargs[f.name] = {}
        elif "list" in str(f.type):
            kwargs[f.name] = []
        else:
            kwargs[f.name] = ""
    return Scan(**kwargs)


def trio(child_bi, a_bi, b_bi, **kw: Any) -> tuple[Scan, Scan, Scan]:
    return (
        make_scan(np.asarray(child_bi), name="child", **kw),
        make_scan(np.asarray(a_bi), name="A", **kw),
        make_scan(np.asarray(b_bi), name="B", **kw),
    )


def zoo_like(normalize: bool = False) -> Recipe:
    """father (A) / mother (B): MoE 70% mother, the rest from the father (zoo WINNING)."""
    mother = [{"component": "mlp", "value": 0.7}, {"component": "router", "value": 0.7}]
    father = [{**r, "value": 0.3} for r in mother]
    return Recipe.parse(
        {
            "method": "linear",
            "parents": [
                {
                    "name": "father",
                    "path": "/f",
                    "parameters": {"weight": [*father, {"value": 1.0}]},
                },
                {
                    "name": "mother",
                    "path": "/m",
                    "parameters": {"weight": [*mother, {"value": 0.0}]},
                },
            ],
            "parameters": {"normalize": normalize},
        }
    )


def hand_localization(flagged: list[int], recovery: list[float]) -> Localization:
    """A 4-layer localization of a 2-category child whose span candidate recovers
    ``recovery`` [L] (A: nothing, B: -5 %); ``attn`` deviates at L1 (t = 2)."""
    L = len(recovery)
    base = [2.0, 2.0]
    span = [[2.0 * (1 - r) for r in recovery]] * 2
    return Localization(
        categories=["REASONING", "CODE"],
        num_layers=L,
        loss_tokens="completion",
        loss=base,
        swapped={"span": span, "A": [[2.0] * L] * 2, "B": [[2.1] * L] * 2},
        span_t={"attn": [0.5, 2.0, 0.5, 0.5]},
        span_dist={"attn": [0.0, 0.0, 0.0, 0.0]},
        t_ref={"attn": 0.5},
        recovery=recovery,
        best=["span"] * L,
        flagged=flagged,
        margin=0.03,
    )
