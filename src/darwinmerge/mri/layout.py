"""Where the hook points live in each model family (architecture knowledge as data).

A :class:`FamilyLayout` names, relative to the loaded ``*ForCausalLM`` module, the
decoder-layer list, the final norm and the LM head, and, relative to one decoder layer,
the router module. Which layers are sparse (carry a router) is a rule on the config.
:func:`resolve_layout` looks the points up in a live model and fails loudly when one is
missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from darwinmerge.errors import ArchitectureMismatchError, UnknownNameError

__all__ = ["FAMILY_LAYOUTS", "FamilyLayout", "ResolvedLayout", "family_of", "resolve_layout"]


def _all_sparse(config: Any, layer: int) -> bool:
    return True


def _no_sparse(config: Any, layer: int) -> bool:
    return False


def _qwen_sparse_step(config: Any, layer: int) -> bool:
    # transformers' Qwen2Moe/Qwen3Moe decoder layer: sparse unless listed in
    # mlp_only_layers, and only every decoder_sparse_step-th layer.
    only = getattr(config, "mlp_only_layers", None) or []
    step = getattr(config, "decoder_sparse_step", 1) or 1
    return layer not in only and config.num_experts > 0 and (layer + 1) % step == 0


@dataclass(frozen=True)
class FamilyLayout:
    """Dotted module paths for one family. ``layers`` / ``norm`` are alternatives tried
    in order (text-only vs multimodal wrappers)."""

    family: str
    layers: tuple[str, ...]
    norm: tuple[str, ...]
    lm_head: str
    router: str | None  # relative to a decoder layer; None for dense families
    is_sparse: Callable[[Any, int], bool]
    num_experts_field: str | None = None
    top_k_field: str | None = None
    experts: str | None = None  # relative to a decoder layer: the fused experts module


_TEXT_LAYERS = ("model.layers", "model.language_model.layers")
_TEXT_NORM = ("model.norm", "model.language_model.norm")


def _dense(name: str) -> FamilyLayout:
    return FamilyLayout(name, _TEXT_LAYERS, _TEXT_NORM, "lm_head", None, _no_sparse)


FAMILY_LAYOUTS: dict[str, FamilyLayout] = {
    "qwen3_5_moe": FamilyLayout(
        "qwen3_5_moe",
        _TEXT_LAYERS,
        _TEXT_NORM,
        "lm_head",
        "mlp.gate",
        _all_sparse,
        "num_experts",
        "num_experts_per_tok",
        "mlp.experts",
    ),
    "qwen3_moe": FamilyLayout(
        "qwen3_moe",
        _TEXT_LAYERS,
        _TEXT_NORM,
        "lm_head",
        "mlp.gate",
        _qwen_sparse_step,
        "num_experts",
        "num_experts_per_tok",
        "mlp.experts",
    ),
    "qwen2_moe": FamilyLayout(
        "qwen2_moe",
        _TEXT_LAYERS,
        _TEXT_NORM,
        "lm_head",
        "mlp.gate",
        _qwen_sparse_step,
        "num_experts",
        "num_experts_per_tok",
        "mlp.experts",
    ),
    "mixtral": FamilyLayout(
        "mixtral",
        _TEXT_LAYERS,
        _TEXT_NORM,
        "lm_head",
        "mlp.gate",
        _all_sparse,
        "num_local_experts",
        "num_experts_per_tok",
        "mlp.experts",
    ),
    "llama": _dense("llama"),
    "mistral": _dense("mistral"),
    "qwen2": _dense("qwen2"),
    "qwen3": _dense("qwen3"),
}

# config.model_type -> family
_MODEL_TYPES = {
    "qwen3_5_moe": "qwen3_5_moe",
    "qwen3_5_moe_text": "qwen3_5_moe",
    "qwen3_moe": "qwen3_moe",
    "qwen2_moe": "qwen2_moe",
    "mixtral": "mixtral",
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}


def family_of(config: Any) -> str:
    """The family name for a transformers config (by ``model_type``)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _MODEL_TYPES:
        raise UnknownNameError(
            f"MRI has no hook layout for model_type {model_type!r}; "
            f"supported: {', '.join(sorted(_MODEL_TYPES))}"
        )
    return _MODEL_TYPES[model_type]


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
    lay = FAMILY_LAYOUTS[family_of(config)]
    tcfg = _text_config(config)

    def first(paths: tuple[str, ...], what: str) -> tuple[str, nn.Module]:
        for p in paths:
            mod = _get(model, p)
            if mod is not None:
                return p, mod
        raise ArchitectureMismatchError(
            f"{lay.family}: hook point {what} not found at {' or '.join(paths)}"
        )

    layers_path, layer_list = first(lay.layers, "decoder layers")
    _, norm = first(lay.norm, "final norm")
    _, head = first((lay.lm_head,), "lm_head")
    layers: tuple[nn.Module, ...] = tuple(layer_list.children())
    if not layers:
        raise ArchitectureMismatchError(f"{lay.family}: {layers_path} holds no decoder layers")
    routers: dict[int, nn.Module] = {}
    experts: dict[int, nn.Module] = {}
    num_experts = top_k = 0
    if lay.router is not None:
        num_experts = int(getattr(tcfg, lay.num_experts_field or "", 0) or 0)
        top_k = int(getattr(tcfg, lay.top_k_field or "", 0) or 0)
        for i, layer in enumerate(layers):
            if not lay.is_sparse(tcfg, i):
                continue
            router = _get(layer, lay.router)
            if router is None or getattr(router, "weight", None) is None:
                raise ArchitectureMismatchError(
                    f"{lay.family}: layer {i} should be sparse but has no router at "
                    f"{layers_path}.{i}.{lay.router}"
                )
            routers[i] = router
            if lay.experts is not None:
                block = _get(layer, lay.experts)
                if block is None:
                    raise ArchitectureMismatchError(
                        f"{lay.family}: layer {i} has no experts at {layers_path}.{i}.{lay.experts}"
                    )
                experts[i] = block
    return ResolvedLayout(
        family=lay.family,
        layers=layers,
        routers=routers,
        experts=experts,
        norm=norm,
        lm_head=head,
        layers_path=layers_path,
        num_experts=num_experts,
        top_k=top_k,
    )
