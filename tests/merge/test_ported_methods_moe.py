"""The methods ported from mergekit 0.1.5 on a tiny Qwen3.5-MoE through the planner: fused
expert tensors merge expert by expert and projection by projection (gate and up apart),
every other tensor as one whole tensor (mergekit's per-tensor maths, which
tests/merge_ops/test_mergekit_parity.py checks against mergekit itself)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from darwinmerge.merge import Recipe, StateDictSource, execute_plan, plan_merge
from darwinmerge.merge.ops import apply_method
from darwinmerge.zoo.tiny import build_tiny_model

# method -> (recipe parameters, parents used, base used)
PORTED: dict[str, tuple[dict[str, Any], int, bool]] = {
    "nuslerp": ({"weight": 0.5}, 2, False),
    "multislerp": ({"weight": 0.5}, 2, True),
    "karcher": ({}, 2, False),
    "model_stock": ({}, 2, True),
    "sce": ({"select_topk": 0.5}, 2, True),
    "nearswap": ({"t": 0.01}, 1, True),
    "arcee_fusion": ({}, 1, True),
    "ram": ({"epsilon": 0.02}, 2, True),
    "ramplus_tl": ({"epsilon": 0.02, "r": 0.5, "alpha": 100.0}, 2, True),
    "passthrough": ({"scale": 0.5}, 1, False),
}
GATE_UP = "model.layers.1.mlp.experts.gate_up_proj"
DOWN = "model.layers.1.mlp.experts.down_proj"
WHOLE = ("model.layers.3.self_attn.q_proj.weight", "model.norm.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {
            k: v.detach() for k, v in build_tiny_model("qwen3_5_moe", seed=s).state_dict().items()
        }
        for name, s in (("father", 0), ("mother", 1), ("base", 2))
    }


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return build_tiny_model("qwen3_5_moe", seed=0).config.to_dict()


def _merge(method: str, models, config) -> tuple[dict[str, torch.Tensor], list, Any]:  # type: ignore[no-untyped-def]
    parameters, n, with_base = PORTED[method]
    names = ["father", "mother"][:n]
    recipe = Recipe.parse(
        {
            "parents": [{"name": p, "path": f"/{p}"} for p in names],
            **({"base": "/base"} if with_base else {}),
            "method": method,
            "parameters": parameters,
        }
    )
    used = names + (["base"] if with_base else [])
    sources = [StateDictSource(models[m], config) for m in used]
    plan = plan_merge(recipe, sources)
    out: dict[str, torch.Tensor] = {}
    execute_plan(plan, sources, out.__setitem__, threads=1)
    return out, [models[m] for m in names], models["base"] if with_base else None


def _apply(method: str, tensors, base, group_dims: int = 0) -> torch.Tensor:  # type: ignore[no-untyped-def]
    parameters, n, _ = PORTED[method]
    declared = {"weight", "scale"}
    per_model = {k: v for k, v in parameters.items() if k in declared}
    rest = {k: v for k, v in parameters.items() if k not in declared}
    return apply_method(
        method,
        tensors,
        base=base,
        model_params=[per_model] * len(tensors),
        params=rest,
        group_dims=group_dims,
    )


@pytest.mark.parametrize("method", sorted(PORTED))
def test_experts_merge_one_by_one_and_other_tensors_whole(models, config, method: str) -> None:
    out, parents, base = _merge(method, models, config)
    assert set(out) == set(models["father"])
    for name in WHOLE:
        want = _apply(method, [p[name] for p in parents], None if base is None else base[name])
        torch.testing.assert_close(out[name], want, rtol=1e-6, atol=1e-6, msg=name)
    inner = models["father"][GATE_UP].shape[1] // 2
    for e in range(models["father"][GATE_UP].shape[0]):
        for half in (slice(0, inner), slice(inner, 2 * inner)):  # gate, then up
            pick = (e, half)
            want = _apply(
                method,
                [p[GATE_UP][pick] for p in parents],
                None if base is None else base[GATE_UP][pick],
            )
            torch.testing.assert_close(out[GATE_UP][pick], want, rtol=1e-6, atol=1e-6)
        want = _apply(
            method, [p[DOWN][e] for p in parents], None if base is None else base[DOWN][e]
        )
        torch.testing.assert_close(out[DOWN][e], want, rtol=1e-6, atol=1e-6)
    # the merge did something: not a copy of the first parent (passthrough scales it)
    assert not torch.equal(out[GATE_UP], parents[0][GATE_UP])
    # and per expert is not per fused tensor, except for entry-by-entry maths
    fused = _apply(
        method, [p[DOWN] for p in parents], None if base is None else base[DOWN], group_dims=0
    )
    if method in ("nearswap", "ram", "passthrough"):
        torch.testing.assert_close(out[DOWN], fused, rtol=1e-6, atol=1e-6)
    else:
        assert not torch.allclose(out[DOWN], fused, rtol=1e-5, atol=1e-6), method
