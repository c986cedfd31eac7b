"""``darwin merge`` of a mergekit YAML equals mergekit's own output on a dense model.

The configs use per-model parameters, gradients and filters, so the planner's parameter
resolution is checked along with the maths. Needs ``.venv-mergekit`` (``make
mergekit-venv``, part of ``make test``); set DARWIN_SKIP_MERGEKIT=1 to skip knowingly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darwinmerge.merge import load_any_config, merge_to_disk
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

from .conftest import read_tensors, require_mergekit, run_mergekit

CONFIGS = {
    "linear": {
        "merge_method": "linear",
        "models": [
            {"model": "a", "parameters": {"weight": [0.2, 0.9]}},
            {
                "model": "b",
                "parameters": {"weight": [{"filter": "self_attn", "value": 0.3}, {"value": 0.6}]},
            },
        ],
    },
    "slerp": {
        "merge_method": "slerp",
        "base_model": "a",
        "models": [{"model": "a"}, {"model": "b"}],
        "parameters": {"t": [{"filter": "mlp", "value": [0.0, 0.5, 1.0]}, {"value": 0.35}]},
    },
    "task_arithmetic": {
        "merge_method": "task_arithmetic",
        "base_model": "base",
        "models": [
            {"model": "a", "parameters": {"weight": 0.7}},
            {"model": "b", "parameters": {"weight": [0.1, 0.5]}},
        ],
    },
    "ties": {
        "merge_method": "ties",
        "base_model": "base",
        "models": [
            {"model": "a", "parameters": {"weight": 0.6, "density": 0.5}},
            {"model": "b", "parameters": {"weight": 0.4, "density": [0.3, 0.9]}},
        ],
        "parameters": {"normalize": True, "int8_mask": True},
    },
    "breadcrumbs": {
        "merge_method": "breadcrumbs",
        "base_model": "base",
        "models": [
            {"model": "a", "parameters": {"weight": 0.5, "density": 0.8, "gamma": 0.05}},
            {"model": "b", "parameters": {"weight": 0.5, "density": 0.7, "gamma": 0.02}},
        ],
    },
    "sliced_slerp": {
        "merge_method": "slerp",
        "base_model": "a",
        "slices": [
            {
                "sources": [
                    {"model": "a", "layer_range": [0, 2]},
                    {"model": "b", "layer_range": [0, 2]},
                ],
                "parameters": {"t": 0.2},
            },
            {
                "sources": [
                    {"model": "a", "layer_range": [2, 4]},
                    {"model": "b", "layer_range": [2, 4]},
                ]
            },
        ],
        "parameters": {"t": 0.8},
    },
    # the methods ported from mergekit 0.1.5
    "nuslerp": {
        "merge_method": "nuslerp",
        "models": [
            {"model": "a", "parameters": {"weight": 0.3}},
            {"model": "b", "parameters": {"weight": [0.9, 0.2]}},
        ],
    },
    "nuslerp_base_rows": {
        "merge_method": "nuslerp",
        "base_model": "base",
        "models": [
            {"model": "a", "parameters": {"weight": 0.6}},
            {"model": "b", "parameters": {"weight": 0.4}},
        ],
        "parameters": {"nuslerp_flatten": False},
    },
    "multislerp": {
        "merge_method": "multislerp",
        "base_model": "base",
        "models": [
            {"model": "a", "parameters": {"weight": 0.7}},
            {
                "model": "b",
                "parameters": {"weight": [{"filter": "mlp", "value": 0.1}, {"value": 0.5}]},
            },
        ],
    },
    "karcher": {  # mergekit's karcher takes the base model as one more input
        "merge_method": "karcher",
        "base_model": "base",
        "models": [{"model": "a"}, {"model": "b"}],
        "parameters": {"max_iter": 5},
    },
    "model_stock": {
        "merge_method": "model_stock",
        "base_model": "base",
        "models": [{"model": "a"}, {"model": "b"}],
    },
    "sce": {
        "merge_method": "sce",
        "base_model": "base",
        "models": [{"model": "a"}, {"model": "b"}],
        "parameters": {"select_topk": [0.3, 0.8], "int8_mask": True},
    },
    "nearswap": {
        "merge_method": "nearswap",
        "base_model": "base",
        "models": [{"model": "base"}, {"model": "a"}],
        "parameters": {"t": [{"filter": "self_attn", "value": 0.002}, {"value": 0.01}]},
    },
    "arcee_fusion": {
        "merge_method": "arcee_fusion",
        "base_model": "base",
        "models": [{"model": "base"}, {"model": "a"}],
    },
    "ram": {
        "merge_method": "ram",
        "base_model": "base",
        "models": [{"model": "a"}, {"model": "b"}],
        "parameters": {"epsilon": 0.02},
    },
    "ramplus_tl": {
        "merge_method": "ramplus_tl",
        "base_model": "base",
        "models": [{"model": "a"}, {"model": "b"}],
        "parameters": {"epsilon": 0.02, "r": 0.5, "alpha": 5.0},
    },
    "passthrough": {
        "merge_method": "passthrough",
        "models": [{"model": "b", "parameters": {"scale": [0.5, 1.5]}}],
    },
}


@pytest.fixture(scope="module")
def mergekit_outputs(tmp_path_factory):
    require_mergekit()
    root = tmp_path_factory.mktemp("mk")
    for tag, seed in (("a", 0), ("b", 1), ("base", 2)):
        save_tiny(build_tiny_model("llama", seed=seed), root / tag)
    run_mergekit(root, CONFIGS)
    return root


@pytest.mark.parametrize("name", list(CONFIGS))
def test_darwin_equals_mergekit(mergekit_outputs: Path, name: str):
    root = mergekit_outputs
    error = root / f"mk-{name}.error"
    assert not error.exists(), error.read_text()
    recipe = load_any_config(root / f"{name}.yaml")
    ours = read_tensors(merge_to_disk(recipe, root / f"dw-{name}").out_dir)
    theirs = read_tensors(root / f"mk-{name}")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype, key
        assert torch.allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6), key
    # and the configs are not trivial: the child differs from every input
    for model in ("a", "b", "base"):
        inputs = read_tensors(root / model)
        assert any(not torch.allclose(ours[k], inputs[k]) for k in ours), model
