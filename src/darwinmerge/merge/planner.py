"""Recipe x architectures -> one job per output tensor.

The child is written in the donor parent's layout and naming. Every output tensor is
described by its *pieces* (canonical, layout-independent keys: one per expert and
projection for expert weights); each other parent (and the base) is asked where it
stores each piece, so parents that differ in expert layout (fused ``[E, 2I, H]`` vs per
expert) or in prefix (``model.language_model.`` vs ``model.``) are matched by role, not
by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from darwinmerge.arch import Architecture, TensorRole, check_compatible, detect_architecture
from darwinmerge.errors import ArchitectureMismatchError, MergeError
from darwinmerge.merge.ops import METHODS
from darwinmerge.merge.recipe import MERGED, Recipe, resolve_router, resolve_schedule

__all__ = ["Fetch", "MergePlan", "TensorJob", "TensorSource", "plan_merge", "arch_of"]

Index = tuple[Any, ...]

# Components that may exist in one parent only; they are copied from the parent that has them.
_ONE_PARENT_COMPONENTS = frozenset({"vision", "mtp"})


class TensorSource(Protocol):
    """What the planner and executor read from: a CheckpointReader or a state dict."""

    config: dict[str, Any]

    def keys(self) -> list[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def dtype(self, name: str) -> torch.dtype: ...
    def get(self, name: str) -> torch.Tensor: ...
    def get_slice(self, name: str, index: Index) -> torch.Tensor: ...


@dataclass(frozen=True)
class Fetch:
    """How to obtain one input tensor, in the output tensor's layout, from one source.

    ``whole`` is set when a single read gives it (same layout); otherwise ``pieces``
    lists ``(output index, stored name, stored index)`` to assemble it.
    """

    source: int
    whole: tuple[str, Index] | None = None
    pieces: tuple[tuple[Index, str, Index], ...] = ()


@dataclass(frozen=True)
class TensorJob:
    name: str
    role: TensorRole
    shape: tuple[int, ...]
    dtype: torch.dtype
    action: str  # "merge" | "copy"
    inputs: tuple[Fetch, ...]
    base: Fetch | None = None
    method: str = ""
    model_params: tuple[dict[str, float], ...] = ()
    params: dict[str, float | bool] = field(default_factory=dict)
    group_shape: tuple[int, ...] | None = None  # view used so that groups lead
    group_dims: int = 0
    overrides: tuple[tuple[Index, Fetch, Index], ...] = ()  # (out index, fetch, index into fetched)
    seed_key: str = ""


@dataclass
class MergePlan:
    recipe: Recipe
    archs: list[Architecture]  # parents in recipe order, then the base if any
    donor: int
    jobs: list[TensorJob]
    notes: list[str]

    @property
    def out_arch(self) -> Architecture:
        return self.archs[self.donor]


def arch_of(source: TensorSource) -> Architecture:
    keys = source.keys()
    return detect_architecture(source.config, keys, {k: source.shape(k) for k in keys})


def _group_view(role: TensorRole, shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, int]:
    """Leading group dims so that every statistic is per expert and per projection."""
    if role.component == "experts" and role.expert_axis is not None:
        if role.proj == "gate_up":
            e, two_i, h = shape
            return (e, 2, two_i // 2, h), 2
        return None, 1
    if role.component == "router" and len(shape) == 2:
        return None, 1  # one row per expert: the row is the expert's routing key
    return None, 0


def _locate_all(
    out_arch: Architecture, name: str, src_arch: Architecture, source: int
) -> Fetch | None:
    pieces = out_arch.pieces(name)
    located = []
    for piece in pieces:
        where = src_arch.locate(piece.canonical)
        if where is None:
            return None
        located.append((piece.index, where[0], tuple(where[1])))
    names = {stored for _, stored, _ in located}
    if len(names) == 1 and all(tuple(o) == s for o, _, s in located):
        return Fetch(source=source, whole=(located[0][1], ()))
    if len(located) == 1 and tuple(located[0][0]) == ():
        return Fetch(source=source, whole=(located[0][1], located[0][2]))
    return Fetch(source=source, pieces=tuple((tuple(o), n, s) for o, n, s in located))


def _expert_fetch(
    out_arch: Architecture,
    name: str,
    src_arch: Architecture,
    source: int,
    expert: int,
    source_expert: int,
) -> tuple[Fetch, Index] | None:
    """Fetch of the source's expert ``source_expert`` slice matching output ``expert``."""
    role = out_arch.role(name)
    pat = re.compile(rf"experts\.{expert}\.")
    if role.expert_axis is None:  # per-expert output tensor
        canonical = pat.sub(f"experts.{source_expert}.", role.canonical, count=1)
        where = src_arch.locate(canonical)
        if where is None:
            return None
        return Fetch(source=source, whole=(where[0], tuple(where[1]))), ()
    # fused output: assemble the full tensor from the source and take the slice
    fetch = _locate_all(out_arch, name, src_arch, source)
    if fetch is None:
        return None
    return fetch, (source_expert,)


def plan_merge(recipe: Recipe, sources: Sequence[TensorSource]) -> MergePlan:
    """Plan a merge. ``sources`` are the parents in recipe order, then the base if any."""
    n_parents = len(recipe.parents)
    expected = n_parents + (1 if recipe.base else 0)
    if len(sources) != expected:
        raise MergeError(f"plan_merge needs {expected} sources, got {len(sources)}")
    names = [p.name for p in recipe.parents] + (["base"] if recipe.base else [])
    archs = [arch_of(s) for s in sources]
    for i in range(1, len(archs)):
        try:
            check_compatible(archs[0], archs[i])
        except ArchitectureMismatchError as exc:
            raise ArchitectureMismatchError(f"{names[0]} vs {names[i]}: {exc}") from None
    donor = [p.name for p in recipe.parents].index(recipe.donor_name)
    out_arch = archs[donor]
    method = METHODS.get(recipe.method)
    num_layers = out_arch.num_layers
    for tp in recipe.transplants:
        if tp.layer >= num_layers or (out_arch.num_experts or 0) <= max(
            tp.expert, tp.source_expert or 0
        ):
            raise MergeError(
                f"transplant (layer {tp.layer}, expert {tp.expert}) is outside the model: "
                f"{num_layers} layers, {out_arch.num_experts or 0} experts"
            )
    transplants: dict[int, list[Any]] = {}
    for tp in recipe.transplants:
        transplants.setdefault(tp.layer, []).append(tp)

    notes: list[str] = []
    one_parent: dict[str, int] = {}
    jobs: list[TensorJob] = []
    src = sources[donor]
    for name in src.keys():
        try:
            role = out_arch.role(name)
        except MergeError:
            if recipe.unknown_tensors != "donor":
                raise
            role = TensorRole(name=name, layer=None, component="other", canonical=name)
            jobs.append(_copy_job(name, role, src, donor, seed_key=name))
            notes.append(f"copied unknown tensor {name} from donor {names[donor]}")
            continue
        shape = tuple(src.shape(name))
        fetches: list[Fetch | None] = []
        for i, arch in enumerate(archs):
            if i == donor:
                fetches.append(Fetch(source=donor, whole=(name, ())))
            else:
                fetches.append(_locate_all(out_arch, name, arch, i))
        missing = [names[i] for i, f in enumerate(fetches) if f is None]
        if missing:
            if role.component in _ONE_PARENT_COMPONENTS:
                jobs.append(_copy_job(name, role, src, donor, seed_key=role.canonical))
                one_parent[role.component] = one_parent.get(role.component, 0) + 1
                continue
            raise ArchitectureMismatchError(
                f"tensor {name} ({role.component}) of {names[donor]} has no counterpart in "
                f"{', '.join(missing)}; the parents must share this architecture"
            )
        for i, sf in enumerate(sources):
            if i == donor:
                continue
            f = fetches[i]
            assert f is not None
            if f.whole is not None and f.whole[1] == () and tuple(sf.shape(f.whole[0])) != shape:
                raise ArchitectureMismatchError(
                    f"tensor {name}: shape {list(shape)} in {names[donor]} but "
                    f"{list(sf.shape(f.whole[0]))} in {names[i]} ({f.whole[0]})"
                )
        jobs.append(
            _merge_job(
                recipe,
                method,
                role,
                name,
                shape,
                src.dtype(name),
                fetches,
                num_layers,
                n_parents,
                archs,
                donor,
                transplants,
            )
        )

    for comp, count in sorted(one_parent.items()):
        notes.append(f"{count} {comp} tensors only {names[donor]} has were copied from it")
    for i, arch in enumerate(archs[:n_parents]):
        if i == donor:
            continue
        extra: dict[str, int] = {}
        for key in sources[i].keys():
            try:
                role = arch.role(key)
            except MergeError:
                if recipe.unknown_tensors != "donor":
                    raise
                notes.append(f"not carried: unknown tensor {key} of {names[i]} (not in the donor)")
                continue
            if all(out_arch.locate(p.canonical) is not None for p in arch.pieces(key)):
                continue
            if role.component not in _ONE_PARENT_COMPONENTS:
                raise ArchitectureMismatchError(
                    f"tensor {key} ({role.component}) of {names[i]} has no counterpart in the "
                    f"donor {names[donor]}; the parents must share this architecture"
                )
            extra[role.component] = extra.get(role.component, 0) + 1
        for comp, count in sorted(extra.items()):
            notes.append(
                f"not carried: {count} {comp} tensors only {names[i]} has (the donor "
                f"{names[donor]} has none); set donor: {names[i]} to keep them"
            )
    return MergePlan(recipe=recipe, archs=archs, donor=donor, jobs=jobs, notes=notes)


def _copy_job(
    name: str, role: TensorRole, src: TensorSource, source: int, *, seed_key: str
) -> TensorJob:
    return TensorJob(
        name=name,
        role=role,
        shape=tuple(src.shape(name)),
        dtype=src.dtype(name),
        action="copy",
        inputs=(Fetch(source=source, whole=(name, ())),),
        seed_key=seed_key,
    )


def _merge_job(
    recipe: Recipe,
    method: Any,
    role: TensorRole,
    name: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    fetches: list[Fetch | None],
    num_layers: int,
    n_parents: int,
    archs: list[Architecture],
    donor: int,
    transplants: Mapping[int, list[Any]],
) -> TensorJob:
    canonical_name = role.canonical
    where = dict(
        layer=role.layer,
        component=role.component,
        tensor_name=canonical_name,
        num_layers=num_layers,
    )
    names = [p.name for p in recipe.parents]

    # router source: a parent verbatim, or merged like any other tensor
    action = "merge"
    inputs = tuple(f for f in fetches[:n_parents] if f is not None)
    if role.component == "router" and role.layer is not None:
        source = resolve_router(recipe, role.layer)
        if source != MERGED:
            action = "copy"
            inputs = (fetches[names.index(source)],)  # type: ignore[assignment]

    overrides: list[tuple[Index, Fetch, Index]] = []
    if (
        role.layer is not None
        and role.layer in transplants
        and role.component in ("experts", "router")
    ):
        for tp in transplants[role.layer]:
            s = names.index(tp.source)
            src_expert = tp.source_expert if tp.source_expert is not None else tp.expert
            if role.component == "router":
                f = fetches[s]
                assert f is not None
                overrides.append(((tp.expert,), f, (src_expert,)))
            elif role.expert_axis is not None:
                got = _expert_fetch(archs[donor], name, archs[s], s, tp.expert, src_expert)
                if got is None:
                    raise MergeError(f"transplant source {tp.source} has no expert {src_expert}")
                overrides.append(((tp.expert,), got[0], got[1]))
            elif role.expert == tp.expert:
                got = _expert_fetch(archs[donor], name, archs[s], s, tp.expert, src_expert)
                if got is None:
                    raise MergeError(f"transplant source {tp.source} has no expert {src_expert}")
                action, inputs = "copy", (got[0],)

    params: dict[str, float | bool] = {}
    model_params: list[dict[str, float]] = []
    if action == "merge":
        for key, default in method.global_params.items():
            value = _lookup(
                [recipe.parameters], key, where, default, f"{method.name}, tensor {name}"
            )
            if value is not None:
                params[key] = bool(value) if isinstance(default, bool) else value
        for parent in recipe.parents:
            mp: dict[str, float] = {}
            for key, default in method.model_params.items():
                value = _lookup(
                    [parent.parameters, recipe.parameters],
                    key,
                    where,
                    default,
                    f"{method.name}, parent {parent.name}, tensor {name}",
                )
                if value is not None:
                    mp[key] = value
            model_params.append(mp)
    group_shape, group_dims = _group_view(role, shape)
    base = fetches[n_parents] if recipe.base else None
    return TensorJob(
        name=name,
        role=role,
        shape=shape,
        dtype=dtype,
        action=action,
        inputs=inputs,
        base=base if action == "merge" else None,
        method=recipe.method if action == "merge" else "",
        model_params=tuple(model_params),
        params=params,
        group_shape=group_shape,
        group_dims=group_dims,
        overrides=tuple(overrides),
        seed_key=canonical_name,
    )


def _lookup(
    layers: Sequence[Mapping[str, Any]], key: str, where: Mapping[str, Any], default: Any, what: str
) -> float | None:
    """First value of ``key`` in ``layers`` of schedules (parent's, then the recipe's);
    None means: use the method's default. A required parameter without a value fails."""
    for schedules in layers:
        if key in schedules:
            value = resolve_schedule(schedules[key], **where)
            if value is not None:
                return value
    if default is None:
        raise MergeError(f"parameter {key!r} ({what}) has no value; add a default rule")
    return None
