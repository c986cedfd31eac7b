"""Shared helpers for the MRI tests: tiny models from the zoo and a byte encoder."""

from __future__ import annotations

import pytest
import torch

from darwinmerge.mri import ProbeBatches, ProbeSet, builtin_probes, tokenize_probes
from darwinmerge.zoo.tiny import build_tiny_model


def byte_encode(text: str) -> list[int]:
    return [b % 128 for b in text.encode("utf-8")]


def small_probes(per_category: int = 2, categories: int = 3) -> ProbeSet:
    full = builtin_probes()
    cats = list(full.texts)[:categories]
    return ProbeSet({c: full.texts[c][:per_category] for c in cats})


def batches(
    per_category: int = 2, categories: int = 3, max_length: int = 40, batch_size: int = 4
) -> ProbeBatches:
    return tokenize_probes(
        small_probes(per_category, categories),
        byte_encode,
        max_length=max_length,
        batch_size=batch_size,
    )


def zero_layer_outputs(model: torch.nn.Module, layer: int) -> None:
    """Make decoder layer ``layer`` the identity: zero every projection that writes into
    the residual stream (attention / linear-attention output, expert and MLP down)."""
    prefix = f"model.layers.{layer}."
    names = ("o_proj.weight", "out_proj.weight", "down_proj", "down_proj.weight")
    hit = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(prefix) and name.endswith(names):
                p.zero_()
                hit += 1
    assert hit >= 2, f"nothing zeroed in layer {layer}"


@pytest.fixture
def probe_batches() -> ProbeBatches:
    return batches()


def tiny(family: str, seed: int = 0, **kw: object) -> torch.nn.Module:
    return build_tiny_model(family, seed=seed, **kw)
