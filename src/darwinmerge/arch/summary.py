"""An info object describing one checkpoint's architecture, for ``darwin inspect`` and reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from darwinmerge.arch.architecture import Architecture
from darwinmerge.arch.roles import COMPONENTS

__all__ = ["ArchitectureSummary", "ComponentRow", "LayerRow", "TensorRow", "summarize"]


@dataclass(frozen=True)
class ComponentRow:
    component: str
    tensors: int
    params: int
    bytes: int


@dataclass(frozen=True)
class LayerRow:
    layer: int
    layer_type: str  # "full_attention" | "linear_attention" | ...
    mlp: str  # "moe" | "dense" | "none"
    tensors: int
    params: int
    bytes: int


@dataclass(frozen=True)
class TensorRow:
    name: str
    shape: tuple[int, ...]
    component: str
    layer: int | None
    canonical: str
    expert: int | None
    proj: str | None
    pieces: int


@dataclass(frozen=True)
class ArchitectureSummary:
    family: str
    model_type: str
    num_layers: int
    layer_types: list[str]
    num_experts: int | None
    top_k: int | None
    expert_layout: str | None
    prefix: str
    multimodal: bool
    has_mtp: bool
    unknown: list[str]
    vocab_size: int
    hidden_size: int
    total_tensors: int
    total_params: int
    total_bytes: int
    components: list[ComponentRow]
    layers: list[LayerRow]
    tensors: list[TensorRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    arch: Architecture, nbytes: Mapping[str, int] | None = None, *, with_tensors: bool = False
) -> ArchitectureSummary:
    """Counts, parameters and bytes per component and per layer.

    Parameters come from ``arch.shapes``; bytes from ``nbytes`` (stored sizes per
    tensor; 0 when not given). Components are listed in :data:`COMPONENTS` order;
    tensors no rule matches (``arch.unknown``) are counted under ``"other"``.
    """
    nbytes = nbytes or {}
    comp: dict[str, list[int]] = {}
    per_layer = [[0, 0, 0] for _ in range(arch.num_layers)]
    rows: list[TensorRow] = []
    for role in arch.roles():
        shape = arch.shapes.get(role.name, ())
        params = math.prod(shape) if role.name in arch.shapes else 0
        size = int(nbytes.get(role.name, 0))
        acc = comp.setdefault(role.component, [0, 0, 0])
        acc[0] += 1
        acc[1] += params
        acc[2] += size
        if role.layer is not None:
            per_layer[role.layer][0] += 1
            per_layer[role.layer][1] += params
            per_layer[role.layer][2] += size
        if with_tensors:
            rows.append(
                TensorRow(
                    role.name,
                    shape,
                    role.component,
                    role.layer,
                    role.canonical,
                    role.expert,
                    role.proj,
                    len(arch.pieces(role.name)),
                )
            )
    for name in arch.unknown:  # no rule matches: counted as "other"
        shape = arch.shapes.get(name, ())
        acc = comp.setdefault("other", [0, 0, 0])
        acc[0] += 1
        acc[1] += math.prod(shape) if name in arch.shapes else 0
        acc[2] += int(nbytes.get(name, 0))
        if with_tensors:
            rows.append(TensorRow(name, shape, "other", None, name, None, None, 1))
    mlp = arch.mlp_types()
    return ArchitectureSummary(
        family=arch.family,
        model_type=arch.model_type,
        num_layers=arch.num_layers,
        layer_types=list(arch.layer_types),
        num_experts=arch.num_experts,
        top_k=arch.top_k,
        expert_layout=arch.expert_layout,
        prefix=arch.prefix,
        multimodal=arch.multimodal,
        has_mtp=arch.has_mtp,
        unknown=list(arch.unknown),
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        total_tensors=len(arch.keys),
        total_params=sum(v[1] for v in comp.values()),
        total_bytes=sum(v[2] for v in comp.values()),
        components=[ComponentRow(c, *comp[c]) for c in COMPONENTS if c in comp],
        layers=[
            LayerRow(i, arch.layer_types[i], mlp[i], *per_layer[i]) for i in range(arch.num_layers)
        ],
        tensors=rows,
    )
