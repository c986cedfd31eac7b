"""Build an :class:`Architecture` from a config and tensor names; check two for a merge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from darwinmerge.arch.architecture import Architecture, text_config
from darwinmerge.arch.tables import (
    FAMILY_SPECS,
    MODEL_TYPE_TO_FAMILY,
    SUPPORTED_FAMILIES,
    config_value,
)
from darwinmerge.errors import ArchitectureMismatchError, CheckpointError

__all__ = ["detect_architecture", "check_compatible"]


def _int_field(config: Mapping[str, Any], keys: str | tuple[str, ...], family: str) -> int:
    names = (keys,) if isinstance(keys, str) else keys
    value = next((config[k] for k in names if config.get(k) is not None), None)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(
            f"config.json of a {family} model lacks an integer {' / '.join(names)} (got {value!r})"
        )
    return value


def detect_architecture(
    config: Mapping[str, Any],
    keys: Sequence[str],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Architecture:
    """Family from ``config["model_type"]``, layout and prefix from ``keys``.

    A multimodal wrapper config (``text_config`` + ``vision_config``) is read through its
    ``text_config``. Every key is classified now; tensors no rule matches are listed in
    ``Architecture.unknown`` and ``Architecture.role`` raises :class:`MergeError` for
    them (the caller decides: refuse, or copy from the donor). An unsupported
    ``model_type`` raises :class:`ArchitectureMismatchError` listing the supported
    families; config and tensors that disagree (layer or expert counts) raise it too.
    """
    model_type = config.get("model_type")
    family = MODEL_TYPE_TO_FAMILY.get(str(model_type))
    if family is None:
        raise ArchitectureMismatchError(
            f"model_type {model_type!r} is not supported; "
            f"supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    spec = FAMILY_SPECS[family]
    text = text_config(config)
    num_layers = _int_field(text, "num_hidden_layers", family)
    layer_types = text.get("layer_types") or ["full_attention"] * num_layers
    if len(layer_types) != num_layers:
        raise CheckpointError(
            f"config.json: layer_types has {len(layer_types)} entries "
            f"but num_hidden_layers={num_layers}"
        )
    num_experts = _int_field(text, spec.experts_keys, family) if spec.experts_keys else None
    expert_size = _int_field(text, spec.expert_size_keys, family) if spec.expert_size_keys else None
    top_k = config_value(text, spec.top_k_keys) if num_experts is not None else None
    if not keys:
        raise CheckpointError(f"the {family} checkpoint has no tensors")
    arch = Architecture(
        spec=spec,
        model_type=str(model_type),
        num_layers=num_layers,
        layer_types=[str(t) for t in layer_types],
        num_experts=num_experts,
        top_k=top_k,
        vocab_size=_int_field(text, "vocab_size", family),
        hidden_size=_int_field(text, "hidden_size", family),
        expert_intermediate_size=expert_size,
        multimodal=isinstance(config.get("text_config"), Mapping),
        keys=keys,
        shapes=shapes,
    )
    seen = sorted({r.layer for r in arch.roles() if r.layer is not None})
    if seen != list(range(num_layers)):
        missing = sorted(set(range(num_layers)) - set(seen))
        extra = sorted(set(seen) - set(range(num_layers)))
        raise ArchitectureMismatchError(
            f"config says num_hidden_layers={num_layers} "
            f"but the tensors cover layers {_ranges(seen)}"
            + (f" (missing {_ranges(missing)})" if missing else "")
            + (f" (beyond the config: {_ranges(extra)})" if extra else "")
        )
    return arch


def _ranges(values: Sequence[int]) -> str:
    if not values:
        return "none"
    parts, start, prev = [], values[0], values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(parts)


# (attribute, what to tell the user when it differs)
_MUST_MATCH: tuple[tuple[str, str], ...] = (
    ("num_layers", "layer counts differ"),
    ("hidden_size", "hidden sizes differ"),
    (
        "vocab_size",
        "vocab_size differs (the tokenizers/embeddings do not match; resize one parent first)",
    ),
    ("num_experts", "expert counts differ"),
    ("expert_intermediate_size", "expert intermediate sizes differ"),
    ("layer_types", "layer types differ"),
)


def check_compatible(a: Architecture, b: Architecture) -> None:
    """Raise :class:`ArchitectureMismatchError` unless ``a`` and ``b`` can be merged.

    Same family (a multimodal and a text-only qwen3_5_moe are compatible), same layers,
    hidden size, vocabulary, experts and layer types, and every canonical piece both
    hold has the same shape (when shapes are known). Expert layout and prefix may differ.
    All problems are reported at once.
    """
    if a.family != b.family:
        raise ArchitectureMismatchError(
            f"families differ: {a.family} ({a.model_type}) vs {b.family} ({b.model_type})"
        )
    problems = [
        f"{what}: {getattr(a, attr)} vs {getattr(b, attr)}"
        for attr, what in _MUST_MATCH
        if getattr(a, attr) != getattr(b, attr)
    ]
    if not problems:
        shape_diffs = []
        for canonical in a.canonical_keys():
            sa, sb = a.piece_shape(canonical), b.piece_shape(canonical)
            if sa is not None and sb is not None and sa != sb:
                shape_diffs.append(f"{canonical} {list(sa)} vs {list(sb)}")
        if shape_diffs:
            more = f" (and {len(shape_diffs) - 3} more)" if len(shape_diffs) > 3 else ""
            problems.append("tensor shapes differ: " + "; ".join(shape_diffs[:3]) + more)
    if problems:
        raise ArchitectureMismatchError(
            f"{a.family} checkpoints are not compatible: " + "; ".join(problems)
        )
