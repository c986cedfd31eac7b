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

__all__ = [
    "Fetch",
    "MatchedTensor",
    "Matching",
    "MergePlan",
    "TensorJob",
    "TensorSource",
    "arch_of",
    "assign",
    "match_parents",
    "plan_merge",
]

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
    #: the child's architecture where it is not the donor's (stacked layers)
    stacked: Architecture | None = None

    @property
    def out_arch(self) -> Architecture:
        return self.stacked if self.stacked is not None else self.archs[self.donor]


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


@dataclass(frozen=True)
class MatchedTensor:
    """One output tensor (a donor tensor) and where every source holds it.

    ``kind`` is ``"match"`` (every parent and the base hold it: ``fetches`` has one
    :class:`Fetch` per source) or ``"copy"`` (only the donor has it, or no architecture
    rule covers it and ``unknown_tensors`` is ``donor``: copied from the donor).
    """

    name: str
    role: TensorRole
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str
    fetches: tuple[Fetch, ...] = ()


@dataclass
class Matching:
    """The parents' (and base's) tensors matched by role, independent of any recipe.

    Built once per run by :func:`match_parents`; :func:`assign` puts a recipe on it.
    ``names`` are the parents in order, then ``"base"`` when there is one.
    """

    names: list[str]
    n_parents: int
    has_base: bool
    archs: list[Architecture]
    donor: int
    unknown_tensors: str
    tensors: list[MatchedTensor]
    notes: list[str]

    @property
    def out_arch(self) -> Architecture:
        return self.archs[self.donor]

    @property
    def donor_name(self) -> str:
        return self.names[self.donor]


def match_parents(
    parents: Recipe | Sequence[str],
    sources: Sequence[TensorSource],
    *,
    base: bool | None = None,
    donor: str | None = None,
    unknown_tensors: str | None = None,
) -> Matching:
    """Match the sources' tensors by role. ``parents`` is a recipe (its parent names,
    base, donor and ``unknown_tensors`` are used) or the parent names; ``sources`` are
    the parents in that order, then the base if any. Depends on no method parameter,
    router choice or transplant, so one matching serves every recipe over these parents."""
    if isinstance(parents, Recipe):
        recipe = parents
        parent_names = [p.name for p in recipe.parents]
        base = recipe.base is not None if base is None else base
        donor = donor or recipe.donor_name
        unknown_tensors = unknown_tensors or recipe.unknown_tensors
        if recipe.tokenizer_source is not None and not all(
            getattr(s, "vocabulary_aligned", False) for s in sources
        ):
            raise MergeError(
                "tokenizer_source: the parents must be read on the child's vocabulary; "
                "open them with merge.api.open_sources (or merge.vocab.align_vocabulary)"
            )
    else:
        parent_names = list(parents)
        base = bool(base)
        donor = donor or parent_names[0]
        unknown_tensors = unknown_tensors or "error"
    if unknown_tensors not in ("error", "donor"):
        raise MergeError(f"unknown_tensors must be 'error' or 'donor', got {unknown_tensors!r}")
    if donor not in parent_names:
        raise MergeError(f"donor {donor!r} is not a parent ({', '.join(parent_names)})")
    n_parents = len(parent_names)
    expected = n_parents + (1 if base else 0)
    if len(sources) != expected:
        raise MergeError(f"match_parents needs {expected} sources, got {len(sources)}")
    names = parent_names + (["base"] if base else [])
    archs = [arch_of(s) for s in sources]
    for i in range(1, len(archs)):
        try:
            check_compatible(archs[0], archs[i])
        except ArchitectureMismatchError as exc:
            raise ArchitectureMismatchError(f"{names[0]} vs {names[i]}: {exc}") from None
    d = parent_names.index(donor)
    out_arch = archs[d]

    notes: list[str] = []
    one_parent: dict[str, int] = {}
    tensors: list[MatchedTensor] = []
    src = sources[d]
    for name in src.keys():
        try:
            role = out_arch.role(name)
        except MergeError:
            if unknown_tensors != "donor":
                raise
            role = TensorRole(name=name, layer=None, component="other", canonical=name)
            tensors.append(_copy_entry(name, role, src))
            notes.append(f"copied unknown tensor {name} from donor {names[d]}")
            continue
        shape = tuple(src.shape(name))
        fetches: list[Fetch | None] = []
        for i, arch in enumerate(archs):
            if i == d:
                fetches.append(Fetch(source=d, whole=(name, ())))
            else:
                fetches.append(_locate_all(out_arch, name, arch, i))
        missing = [names[i] for i, f in enumerate(fetches) if f is None]
        if missing:
            if role.component in _ONE_PARENT_COMPONENTS:
                tensors.append(_copy_entry(name, role, src))
                one_parent[role.component] = one_parent.get(role.component, 0) + 1
                continue
            raise ArchitectureMismatchError(
                f"tensor {name} ({role.component}) of {names[d]} has no counterpart in "
                f"{', '.join(missing)}; the parents must share this architecture"
            )
        for i, sf in enumerate(sources):
            f = fetches[i]
            assert f is not None
            if i == d:
                continue
            if f.whole is not None and f.whole[1] == () and tuple(sf.shape(f.whole[0])) != shape:
                raise ArchitectureMismatchError(
                    f"tensor {name}: shape {list(shape)} in {names[d]} but "
                    f"{list(sf.shape(f.whole[0]))} in {names[i]} ({f.whole[0]})"
                )
        tensors.append(
            MatchedTensor(
                name=name,
                role=role,
                shape=shape,
                dtype=src.dtype(name),
                kind="match",
                fetches=tuple(f for f in fetches if f is not None),
            )
        )

    for comp, count in sorted(one_parent.items()):
        notes.append(f"{count} {comp} tensors only {names[d]} has were copied from it")
    for i, arch in enumerate(archs[:n_parents]):
        if i == d:
            continue
        extra: dict[str, int] = {}
        for key in sources[i].keys():
            try:
                role = arch.role(key)
            except MergeError:
                if unknown_tensors != "donor":
                    raise
                notes.append(f"not carried: unknown tensor {key} of {names[i]} (not in the donor)")
                continue
            if all(out_arch.locate(p.canonical) is not None for p in arch.pieces(key)):
                continue
            if role.component not in _ONE_PARENT_COMPONENTS:
                raise ArchitectureMismatchError(
                    f"tensor {key} ({role.component}) of {names[i]} has no counterpart in the "
                    f"donor {names[d]}; the parents must share this architecture"
                )
            extra[role.component] = extra.get(role.component, 0) + 1
        for comp, count in sorted(extra.items()):
            notes.append(
                f"not carried: {count} {comp} tensors only {names[i]} has (the donor "
                f"{names[d]} has none); set donor: {names[i]} to keep them"
            )
    return Matching(
        names=names,
        n_parents=n_parents,
        has_base=bool(base),
        archs=archs,
        donor=d,
        unknown_tensors=unknown_tensors,
        tensors=tensors,
        notes=notes,
    )


def _copy_entry(name: str, role: TensorRole, src: TensorSource) -> MatchedTensor:
    return MatchedTensor(
        name=name, role=role, shape=tuple(src.shape(name)), dtype=src.dtype(name), kind="copy"
    )


def _check_fits(recipe: Recipe, matching: Matching) -> None:
    problems = []
    parents = [p.name for p in recipe.parents]
    if parents != matching.names[: matching.n_parents]:
        problems.append(
            f"parents {parents} differ from the matched ones {matching.names[: matching.n_parents]}"
        )
    if (recipe.base is not None) != matching.has_base:
        problems.append("the recipe's base differs (given / not given) from the matching's")
    if recipe.donor_name != matching.donor_name:
        problems.append(f"donor {recipe.donor_name!r} but matched for {matching.donor_name!r}")
    if recipe.unknown_tensors != matching.unknown_tensors:
        problems.append(
            f"unknown_tensors {recipe.unknown_tensors!r} but matched with "
            f"{matching.unknown_tensors!r}"
        )
    if problems:
        raise MergeError(
            "recipe does not fit the matching: " + "; ".join(problems) + "; match again"
        )


def assign(recipe: Recipe, matching: Matching) -> MergePlan:
    """Put a recipe on a :class:`Matching`: one job per output tensor with its method
    parameters, router source, transplants (revival included) and seed key."""
    if recipe.slices is not None:
        raise MergeError(
            "a recipe with slices (layer stacking) is planned by plan_merge as a whole, "
            "not assigned to a matching of same-shaped parents"
        )
    _check_fits(recipe, matching)
    method = METHODS.get(recipe.method)
    out_arch = matching.out_arch
    num_layers = out_arch.num_layers
    notes = list(matching.notes)
    if matching.has_base and not method.takes_base:
        notes.append(f"the base is not used: {method.name} takes no base model")
    all_transplants = list(recipe.transplants)
    if recipe.revive is not None:
        from darwinmerge.merge.revive import revival_transplants

        revived, revive_notes = revival_transplants(recipe, matching)
        taken = {(tp.layer, tp.expert) for tp in all_transplants}
        for tp in revived:
            if (tp.layer, tp.expert) in taken:
                notes.append(
                    f"revive: layer {tp.layer} expert {tp.expert} already has a transplant; "
                    "the recipe's transplant wins"
                )
                continue
            all_transplants.append(tp)
        notes.extend(revive_notes)
    for tp in all_transplants:
        if tp.layer >= num_layers or (out_arch.num_experts or 0) <= max(
            tp.expert, tp.source_expert or 0
        ):
            raise MergeError(
                f"transplant (layer {tp.layer}, expert {tp.expert}) is outside the model: "
                f"{num_layers} layers, {out_arch.num_experts or 0} experts"
            )
    transplants: dict[int, list[Any]] = {}
    for tp in all_transplants:
        transplants.setdefault(tp.layer, []).append(tp)

    jobs: list[TensorJob] = []
    for entry in matching.tensors:
        if entry.kind == "copy":
            jobs.append(
                TensorJob(
                    name=entry.name,
                    role=entry.role,
                    shape=entry.shape,
                    dtype=entry.dtype,
                    action="copy",
                    inputs=(Fetch(source=matching.donor, whole=(entry.name, ())),),
                    seed_key=entry.role.canonical,
                )
            )
            continue
        jobs.append(
            _merge_job(
                recipe,
                method,
                entry.role,
                entry.name,
                entry.shape,
                entry.dtype,
                list(entry.fetches),
                num_layers,
                matching.n_parents,
                matching.archs,
                matching.donor,
                transplants,
            )
        )
    return MergePlan(
        recipe=recipe, archs=matching.archs, donor=matching.donor, jobs=jobs, notes=notes
    )


def plan_merge(recipe: Recipe, sources: Sequence[TensorSource]) -> MergePlan:
    """Plan a merge (``assign(recipe, match_parents(recipe, sources))``). ``sources`` are
    the parents in recipe order, then the base if any. A recipe with ``slices`` is a
    stacked child (:func:`darwinmerge.merge.stack.plan_stacked`)."""
    if recipe.slices is not None:
        from darwinmerge.merge.stack import plan_stacked

        return plan_stacked(recipe, sources)
    n_parents = len(recipe.parents)
    expected = n_parents + (1 if recipe.base else 0)
    if len(sources) != expected:
        raise MergeError(f"plan_merge needs {expected} sources, got {len(sources)}")
    return assign(recipe, match_parents(recipe, sources))


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
    where = {
        "layer": role.layer,
        "component": role.component,
        "tensor_name": canonical_name,
        "num_layers": num_layers,
    }
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
        base=base if action == "merge" and method.takes_base else None,
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
