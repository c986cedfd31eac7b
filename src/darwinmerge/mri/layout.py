"""Where the hook points live in a loaded model, read from the architecture table.

The family table (:data:`darwinmerge.arch.FAMILY_SPECS`) names, relative to the loaded
``*ForCausalLM`` module, the decoder-layer list, the final norm and the LM head and,
relative to one decoder layer, the router and experts modules; it also says which config
fields hold the expert count and top-k and which layers are sparse. :func:`resolve_layout`
looks the points up in a live model and fails loudly when one is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from darwinmerge.arch import (
    FAMILY_SPECS,
    MODEL_TYPE_TO_FAMILY,
    FamilySpec,
    expert_count,
    experts_per_token,
    is_sparse_layer,
)
from darwinmerge.errors import ArchitectureMismatchError, UnknownNameError

__all__ = ["ResolvedLayout", "family_of", "family_spec", "resolve_layout"]


def family_of(config: Any) -> str:
    """The family name for a transformers config (by ``model_type``)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_FAMILY:
        raise UnknownNameError(
            f"MRI has no hook layout for model_type {model_type!r}; "
            f"supported: {', '.join(sorted(MODEL_TYPE_TO_FAMILY))}"
        )
    return MODEL_TYPE_TO_FAMILY[model_type]


def family_spec(config: Any) -> FamilySpec:
    """The architecture-table entry of a transformers config."""
    return FAMILY_SPECS[family_of(config)]


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def _get(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


@dataclass(frozen=True)
class ResolvedLayout:
    """The hook points of one live model."""

    family: str
    layers: tuple[nn.Module, ...]
    routers: dict[int, nn.Module]  # layer index -> router module (sparse layers only)
    experts: dict[int, nn.Module]  # layer index -> experts module (sparse layers only)
    norm: nn.Module
    lm_head: nn.Module
    layers_path: str
    num_experts: int
    top_k: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def sparse_layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.routers))


def resolve_layout(model: nn.Module) -> ResolvedLayout:
    """Look up every hook point of ``model``; raise :class:`ArchitectureMismatchError`
    naming the missing module path when one is absent."""
    config = getattr(model, "config", None)
    if config is None:
        raise ArchitectureMismatchError("model has no .config; give a transformers model")
    spec = family_spec(config)
    paths = spec.modules
    tcfg = _text_config(config)

    def first(options: tuple[str, ...], what: str) -> tuple[str, nn.Module]:
        for p in options:
            mod = _get(model, p)
            if mod is not None:
                return p, mod
        raise ArchitectureMismatchError(
            f"{spec.family}: hook point {what} not found at {' or '.join(options)}"
        )

    layers_path, layer_list = first(paths.layers, "decoder layers")
    _, norm = first(paths.norm, "final norm")
    _, head = first((paths.lm_head,), "lm_head")
    layers: tuple[nn.Module, ...] = tuple(layer_list.children())
    if not layers:
        raise ArchitectureMismatchError(f"{spec.family}: {layers_path} holds no decoder layers")
    routers: dict[int, nn.Module] = {}
    experts: dict[int, nn.Module] = {}
    num_experts = top_k = 0
    if paths.router is not None:
        num_experts = expert_count(spec, tcfg)
        top_k = experts_per_token(spec, tcfg)
        for i, layer in enumerate(layers):
            if not is_sparse_layer(spec, tcfg, i):
                continue
            router = _get(layer, paths.router)
            if router is None or getattr(router, "weight", None) is None:
                raise ArchitectureMismatchError(
                    f"{spec.family}: layer {i} should be sparse but has no router at "
                    f"{layers_path}.{i}.{paths.router}"
                )
            routers[i] = router
            if paths.experts is not None:
                block = _get(layer, paths.experts)
                if block is None:
                    raise ArchitectureMismatchError(
                        f"{spec.family}: layer {i} has no experts at "
                        f"{layers_path}.{i}.{paths.experts}"
                    )
                experts[i] = block
    return ResolvedLayout(
        family=spec.family,
        layers=layers,
        routers=routers,
        experts=experts,
        norm=norm,
        lm_head=head,
        layers_path=layers_path,
        num_experts=num_experts,
        top_k=top_k,
    )
