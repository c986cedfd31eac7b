"""Layer stacking: a child whose layers are slices of the parents' layers (mergekit's
``slices`` over different layer ranges: frankenmerges, depth up-scaling).

Slice ``k`` of a recipe lists sources ``(parent, [start, end))`` of one length ``n_k``;
its output layers ``o_k .. o_k + n_k - 1`` (``o_k`` = the layers of the slices before it)
merge layer ``start + j`` of every source with the recipe's method (``passthrough``: one
source, copied or scaled). Each source is seen through a :class:`LayerWindow`, a
``n_k``-layer model whose layer ``j`` is the parent's layer ``start + j``, and the slice
is planned like any merge of those windows; its jobs are then renamed to the output
layers and read straight from the parents. Schedules therefore resolve over the slice's
own layers (``t = j / (n_k - 1)``), as in mergekit. Tensors outside the layers come from
the first slice (embeddings, vision tower) and the last slice (final norm, lm_head, MTP).

The child's config is the donor's with ``num_hidden_layers`` and, where the family has
them, ``layer_types`` of the stacked layers. A hybrid family (layer types that repeat
with a period, Qwen3.5's three linear-attention layers then one full-attention layer)
keeps its pattern or the recipe is refused in one line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from darwinmerge.arch import Architecture, detect_architecture, text_config
from darwinmerge.errors import MergeError
from darwinmerge.merge.planner import (
    Fetch,
    Index,
    MergePlan,
    TensorJob,
    TensorSource,
    arch_of,
    plan_merge,
)
from darwinmerge.merge.recipe import ParentSpec, Recipe, Schedule, Slice

__all__ = ["LayerWindow", "plan_stacked", "stacked_config_updates", "stacked_layer_types"]

#: components outside the layers taken from the first slice; the others from the last
_PRE = frozenset({"embed", "vision"})


def _renamed(name: str, old: int, new: int) -> str:
    """``name`` with its decoder-layer index ``old`` written as ``new``."""
    out, count = re.subn(rf"(^|\.)layers\.{old}\.", rf"\g<1>layers.{new}.", name, count=1)
    if count != 1:
        raise MergeError(f"tensor {name}: cannot find its layer index {old} in the name")
    return out


class LayerWindow:
    """Layers ``[start, start + count)`` of a source, seen as a ``count``-layer model
    (its layer ``j`` is the source's layer ``start + j``); tensors outside the layers as
    they are. A :class:`TensorSource`; ``inner_name`` maps a name back to the source's."""

    def __init__(self, inner: TensorSource, arch: Architecture, start: int, count: int) -> None:
        if start + count > arch.num_layers:
            raise MergeError(
                f"layers [{start}, {start + count}) are outside the model's "
                f"{arch.num_layers} layers"
            )
        self.inner = inner
        self._names: dict[str, str] = {}
        for key in inner.keys():
            layer = arch.role(key).layer if key not in arch.unknown else None
            if layer is None:
                self._names[key] = key
            elif start <= layer < start + count:
                self._names[_renamed(key, layer, layer - start)] = key
        self.config = _with_layers(
            dict(inner.config), count, arch.layer_types[start : start + count]
        )

    def inner_name(self, name: str) -> str:
        return self._names[name]

    def keys(self) -> list[str]:
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.inner.shape(self._names[name]))

    def dtype(self, name: str) -> torch.dtype:
        return self.inner.dtype(self._names[name])

    def get(self, name: str) -> torch.Tensor:
        return self.inner.get(self._names[name])

    def get_slice(self, name: str, index: Index) -> torch.Tensor:
        return self.inner.get_slice(self._names[name], index)


def _with_layers(config: dict[str, Any], count: int, layer_types: list[str]) -> dict[str, Any]:
    """``config`` with ``num_hidden_layers`` and ``layer_types`` (in its text config)."""
    updates = stacked_config_updates(config, count, layer_types)
    for key, value in updates.items():
        if isinstance(value, dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def stacked_config_updates(
    config: dict[str, Any], num_layers: int, layer_types: list[str]
) -> dict[str, Any]:
    """The config fields a stacked child changes: ``num_hidden_layers`` and, where the
    family lists them, ``layer_types`` (inside ``text_config`` for a multimodal config)."""
    text = text_config(config)
    fields: dict[str, Any] = {"num_hidden_layers": num_layers}
    if "layer_types" in text:
        fields["layer_types"] = list(layer_types)
    return {"text_config": fields} if text is not config else fields


def _period(types: Sequence[str]) -> int:
    """The shortest period with which ``types`` repeats (its length if none)."""
    for p in range(1, len(types) + 1):
        if all(types[i] == types[i % p] for i in range(len(types))):
            return p
    return len(types)


def stacked_layer_types(recipe: Recipe, archs: Sequence[Architecture]) -> list[str]:
    """The child's layer types, refused when they break the donor's repeating pattern."""
    names = [p.name for p in recipe.parents]
    donor = archs[names.index(recipe.donor_name)]
    assert recipe.slices is not None
    out: list[str] = []
    for k, sl in enumerate(recipe.slices):
        first = sl.sources[0]
        start = first.layers[0]
        for src in sl.sources:
            arch = archs[names.index(src.parent)]
            if src.layers[1] > arch.num_layers:
                raise MergeError(
                    f"slices[{k}]: {src.parent} has {arch.num_layers} layers, the slice takes "
                    f"[{src.layers[0]}, {src.layers[1]})"
                )
            types = arch.layer_types[src.layers[0] : src.layers[1]]
            lead = archs[names.index(first.parent)].layer_types[start : first.layers[1]]
            if types != lead:
                raise MergeError(
                    f"slices[{k}]: {src.parent} layers {list(src.layers)} have layer types "
                    f"{types}, {first.parent} layers {list(first.layers)} {lead}; the merged "
                    "layers must be of one type"
                )
        out.extend(archs[names.index(first.parent)].layer_types[start : first.layers[1]])
    period = _period(donor.layer_types)
    if len(set(donor.layer_types)) > 1:  # hybrid attention: the pattern repeats
        for i, kind in enumerate(out):
            want = donor.layer_types[i % period]
            if kind != want:
                pattern = ", ".join(donor.layer_types[:period])
                raise MergeError(
                    f"slices: output layer {i} would be {kind} but {donor.family} repeats "
                    f"[{pattern}]; start and end every slice at a multiple of {period} "
                    "layers to keep the pattern"
                )
    return out


def _merged(first: dict[str, Schedule], over: dict[str, Schedule]) -> dict[str, Schedule]:
    return {**first, **over}


def _slice_recipe(recipe: Recipe, sl: Slice) -> Recipe:
    """The recipe merging one slice's windows: one parent per source (names made unique
    when a parent gives two sources), parameters of the slice over the recipe's."""
    parents: list[ParentSpec] = []
    taken: set[str] = set()
    for src in sl.sources:
        spec = recipe.parent(src.parent)
        name, k = src.parent, 2
        while name in taken:
            name, k = f"{src.parent}.{k}", k + 1
        taken.add(name)
        parents.append(
            ParentSpec(
                name=name, path=spec.path, parameters=_merged(spec.parameters, src.parameters)
            )
        )
    names = [p.name for p in parents]
    donor = recipe.donor_name if recipe.donor_name in names else names[0]
    return recipe.model_copy(
        update={
            "parents": parents,
            "parameters": _merged(recipe.parameters, sl.parameters),
            "slices": None,
            "donor": donor,
        }
    )


def _outside(fetch: Fetch, windows: Sequence[LayerWindow], real: Sequence[int]) -> Fetch:
    """A fetch from a window as the same fetch from the window's real source."""
    window = windows[fetch.source]
    whole = None
    if fetch.whole is not None:
        whole = (window.inner_name(fetch.whole[0]), fetch.whole[1])
    pieces = tuple((o, window.inner_name(n), i) for o, n, i in fetch.pieces)
    return Fetch(source=real[fetch.source], whole=whole, pieces=pieces)


def _output_job(job: TensorJob, offset: int, windows, real) -> TensorJob:  # type: ignore[no-untyped-def]
    role = job.role
    name, canonical = job.name, role.canonical
    if role.layer is not None:
        name = _renamed(name, role.layer, role.layer + offset)
        canonical = _renamed(canonical, role.layer, role.layer + offset)
        role = replace(role, name=name, layer=role.layer + offset, canonical=canonical)
    return replace(
        job,
        name=name,
        role=role,
        inputs=tuple(_outside(f, windows, real) for f in job.inputs),
        overrides=tuple((o, _outside(f, windows, real), i) for o, f, i in job.overrides),
        seed_key=canonical,
    )


def plan_stacked(recipe: Recipe, sources: Sequence[TensorSource]) -> MergePlan:
    """One job per tensor of the stacked child (module doc); ``sources`` are the
    recipe's parents in order. The jobs read the parents themselves."""
    if recipe.slices is None:
        raise MergeError("plan_stacked needs a recipe with slices")
    if len(sources) != len(recipe.parents):
        raise MergeError(f"plan_stacked needs {len(recipe.parents)} sources, got {len(sources)}")
    archs = [arch_of(s) for s in sources]
    layer_types = stacked_layer_types(recipe, archs)
    names = [p.name for p in recipe.parents]
    jobs: list[TensorJob] = []
    notes: list[str] = []
    offset = 0
    last = len(recipe.slices) - 1
    for k, sl in enumerate(recipe.slices):
        real = [names.index(src.parent) for src in sl.sources]
        windows = [
            LayerWindow(sources[i], archs[i], src.layers[0], sl.length)
            for i, src in zip(real, sl.sources, strict=True)
        ]
        sub = _slice_recipe(recipe, sl)
        plan = plan_merge(sub, windows)
        slice_donor = archs[real[[p.name for p in sub.parents].index(sub.donor_name)]]
        if (slice_donor.prefix, slice_donor.expert_layout) != (
            archs[names.index(recipe.donor_name)].prefix,
            archs[names.index(recipe.donor_name)].expert_layout,
        ):
            raise MergeError(
                f"slices[{k}]: {sub.donor_name} names or lays out its tensors unlike the "
                f"donor {recipe.donor_name} ({slice_donor.prefix}, "
                f"{slice_donor.expert_layout} experts); stack parents saved alike"
            )
        notes.extend(f"slices[{k}]: {note}" for note in plan.notes)
        for job in plan.jobs:
            if job.role.layer is None:
                pre = job.role.component in _PRE
                if not ((pre and k == 0) or (not pre and k == last)):
                    continue
            jobs.append(_output_job(job, offset, windows, real))
        offset += sl.length
    donor = names.index(recipe.donor_name)
    notes.append(
        f"stacked {offset} layers from {len(recipe.slices)} slices "
        f"(the donor {names[donor]} has {archs[donor].num_layers})"
    )
    config = _with_layers(dict(sources[donor].config), offset, layer_types)
    stacked = detect_architecture(config, [j.name for j in jobs], {j.name: j.shape for j in jobs})
    return MergePlan(
        recipe=recipe, archs=archs, donor=donor, jobs=jobs, notes=notes, stacked=stacked
    )
