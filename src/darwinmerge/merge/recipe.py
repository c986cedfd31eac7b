"""The Recipe: a complete, serialisable, validated description of one merge.

A recipe names the parents (and an optional base), the method, the method parameters
as *schedules* that may vary per layer and per component, the router source per layer,
expert transplants, the donor parent (layout, side files, one-parent tensors), the
output dtype and the seed. It round-trips to YAML.

Schedules (``docs/recipes.md`` has the full reference) are one of

* a number: the same value everywhere;
* a list of numbers: a gradient over the layers (mergekit 0.1.5 semantics, position
  ``t = layer / (num_layers - 1)``; tensors outside the layers use ``t = 0``);
* a list of rules ``{component?, filter?, layers?, value}``: the first rule that matches
  a tensor gives its value (a number or a gradient over the rule's own layer range).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from darwinmerge.config.errors import config_error, format_validation_error
from darwinmerge.dtypes import DTypeName
from darwinmerge.errors import ConfigError
from darwinmerge.merge.methods import METHODS, MergeMethod, ParamSpec

__all__ = [
    "COMPONENT_GROUPS",
    "MERGED",
    "ParentSpec",
    "Recipe",
    "Revive",
    "RouterRule",
    "Rule",
    "Schedule",
    "Slice",
    "SliceSource",
    "Transplant",
    "load_recipe",
    "resolve_schedule",
    "resolve_router",
    "format_validation_error",
]

MERGED = "merged"

#: Names a rule's ``component`` may use besides the component names themselves.
COMPONENT_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("attn", "linear_attn"),
    "mlp": ("experts", "shared_expert", "shared_expert_gate", "dense_mlp"),
    "ffn": ("experts", "shared_expert", "shared_expert_gate", "dense_mlp"),
    "moe": ("experts", "shared_expert", "shared_expert_gate", "router"),
    "non_layer": ("embed", "lm_head", "final_norm", "mtp", "vision", "other"),
    "pre": ("embed", "vision"),  # stored before the decoder layers
    "post": ("final_norm", "lm_head", "mtp"),  # stored after them
}

_COMPONENTS = (
    "embed", "lm_head", "final_norm", "attn", "linear_attn", "norm", "router",
    "shared_expert", "shared_expert_gate", "experts", "dense_mlp", "mtp", "vision", "other",
)  # fmt: skip

Number = float | int | bool


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Frozen):
    """One conditional value. All given conditions must hold; none given = default."""

    component: str | list[str] | None = None
    filter: str | None = None
    layers: tuple[int, int] | None = None
    value: Number | list[float]

    @field_validator("component")
    @classmethod
    def _known_component(cls, v: str | list[str] | None) -> str | list[str] | None:
        names = [v] if isinstance(v, str) else (v or [])
        for name in names:
            if name not in _COMPONENTS and name not in COMPONENT_GROUPS:
                known = ", ".join(sorted(_COMPONENTS + tuple(COMPONENT_GROUPS)))
                raise ValueError(f"unknown component {name!r}; known: {known}")
        return v

    @field_validator("layers")
    @classmethod
    def _ordered(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] < 0 or v[1] < v[0]):
            raise ValueError(f"layers must be [first, last] with 0 <= first <= last, got {list(v)}")
        return v

    @field_validator("value")
    @classmethod
    def _nonempty(cls, v: Number | list[float]) -> Number | list[float]:
        if isinstance(v, list) and not v:
            raise ValueError("a gradient needs at least one value")
        return v

    def components(self) -> set[str] | None:
        if self.component is None:
            return None
        names = [self.component] if isinstance(self.component, str) else self.component
        out: set[str] = set()
        for name in names:
            out.update(COMPONENT_GROUPS.get(name, (name,)))
        return out


Schedule = Number | list[float] | list[Rule]


class ParentSpec(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str
    parameters: dict[str, Schedule] = Field(default_factory=dict)


class SliceSource(_Frozen):
    """Layers ``[start, end)`` of one parent (mergekit's ``layer_range``) in a slice, with
    per-model parameters for this slice (over the parent's own)."""

    parent: str
    layers: tuple[int, int]
    parameters: dict[str, Schedule] = Field(default_factory=dict)

    @field_validator("layers")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] <= v[0]:
            raise ValueError(f"layers must be [start, end) with 0 <= start < end, got {list(v)}")
        return v


class Slice(_Frozen):
    """Consecutive output layers: layer ``j`` of the slice merges layer ``start + j`` of
    each source (every source spans the same number of layers); ``parameters`` apply to
    this slice over the recipe's. Schedules resolve over the slice's own layers
    (``t = j / (n - 1)``), as mergekit does."""

    sources: Annotated[list[SliceSource], Field(min_length=1)]
    parameters: dict[str, Schedule] = Field(default_factory=dict)

    @property
    def length(self) -> int:
        start, end = self.sources[0].layers
        return end - start


class RouterRule(_Frozen):
    layers: tuple[int, int] | None = None
    source: str


class Transplant(_Frozen):
    """Child expert ``expert`` of ``layer`` becomes ``source``'s expert ``source_expert``
    (default: the same index), all projections verbatim, and its router row moves along."""

    layer: int = Field(ge=0)
    expert: int = Field(ge=0)
    source: str
    source_expert: int | None = Field(default=None, ge=0)


DeadMap = dict[int, list[int]]


class Revive(_Frozen):
    """Dead-expert revival: every expert a scan finds dead in ``into`` (default: the
    donor) becomes ``source``'s expert in the same slot, router row included.

    ``scan`` is a saved MRI scan of ``into`` (a folder or its JSON file; an expert is
    dead when its utilisation is below ``threshold`` x its fair share) or the dead
    experts inline, ``{layer: [expert, ...]}``. ``donor_scan`` (same forms) is a scan of
    ``source``: slots where the donor's own expert is dead are skipped.
    """

    source: str
    into: str | None = None
    scan: str | DeadMap
    threshold: float = Field(default=0.05, gt=0, le=1)
    donor_scan: str | DeadMap | None = None

    @field_validator("scan", "donor_scan")
    @classmethod
    def _valid_map(cls, v: str | DeadMap | None) -> str | DeadMap | None:
        if isinstance(v, dict):
            for layer, experts in v.items():
                if layer < 0 or any(e < 0 for e in experts):
                    raise ValueError(f"layer {layer}: layers and experts must be >= 0")
                if len(set(experts)) != len(experts):
                    raise ValueError(f"layer {layer}: an expert is listed twice")
        elif isinstance(v, str) and not v.strip():
            raise ValueError("an empty path")
        return v


class Recipe(_Frozen):
    version: Literal[1] = 1
    parents: Annotated[list[ParentSpec], Field(min_length=1)]
    base: str | None = None
    method: str
    parameters: dict[str, Schedule] = Field(default_factory=dict)
    router: str | list[RouterRule] = MERGED
    transplants: list[Transplant] = Field(default_factory=list)
    revive: Revive | None = None
    donor: str | None = None
    unknown_tensors: Literal["error", "donor"] = "error"
    dtype: DTypeName | None = None
    seed: int = 0
    #: layer stacking (frankenmerges, depth up-scaling): the child's layers are these
    #: slices in order; the donor gives the config, side files and tensors outside layers
    slices: list[Slice] | None = None
    #: the child's tokenizer: the donor's files as they are (None), the tokenizer base's
    #: (``base``: the base model, else the donor) or the ``union`` of every model's, with
    #: embeddings and lm_head rebuilt on it (mergekit's tokenizer_source; merge/vocab.py)
    tokenizer_source: Literal["base", "union"] | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        problems: list[str] = []
        names = [p.name for p in self.parents]
        single = self.method in METHODS and METHODS.get(self.method).max_inputs == 1
        if len(names) < 2 and self.base is None and not single:
            problems.append("parents: merge at least two parents (or one parent onto a base)")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"parents: duplicate names {dupes}")
        known = set(names)
        if self.donor is not None and self.donor not in known:
            problems.append(f"donor: {self.donor!r} is not a parent ({', '.join(names)})")
        rules = [RouterRule(source=self.router)] if isinstance(self.router, str) else self.router
        for rule in rules:
            if rule.source != MERGED and rule.source not in known:
                problems.append(
                    f"router: source {rule.source!r} must be {MERGED!r} or a parent "
                    f"({', '.join(names)})"
                )
        for i, tp in enumerate(self.transplants):
            if tp.source not in known:
                problems.append(f"transplants[{i}].source: {tp.source!r} is not a parent")
        if self.revive is not None:
            into = self.revive.into or self.donor_name
            for what, who in (("source", self.revive.source), ("into", into)):
                if who not in known:
                    problems.append(f"revive.{what}: {who!r} is not a parent ({', '.join(names)})")
            if self.revive.source == into:
                problems.append(
                    f"revive: source and into are both {into!r}; revive one parent's dead "
                    "experts from another parent"
                )
        seen = {(tp.layer, tp.expert) for tp in self.transplants}
        if len(seen) != len(self.transplants):
            problems.append("transplants: the same (layer, expert) appears twice")
        problems.extend(_method_problems(self))
        if self.slices is not None:
            problems.extend(_slice_problems(self))
            if self.tokenizer_source is not None:
                problems.append("tokenizer_source: does not combine with slices")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- convenience -------------------------------------------------------------------
    @property
    def donor_name(self) -> str:
        return self.donor or self.parents[0].name

    def parent(self, name: str) -> ParentSpec:
        for p in self.parents:
            if p.name == name:
                return p
        raise ConfigError(f"recipe has no parent named {name!r}")

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_defaults=True)
        data = {"version": 1, **data}
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<recipe>") -> Recipe:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
        return cls.parse(data, source=source)

    @classmethod
    def parse(cls, data: Any, *, source: str = "<recipe>") -> Recipe:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a recipe must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise config_error(source, exc, cls) from None

    def resolved_paths(self, root: Path) -> Recipe:
        """Parent and base paths made absolute relative to ``root`` (the YAML's folder)."""

        def fix(p: str) -> str:
            path = Path(p).expanduser()
            return str(path if path.is_absolute() else (root / path).resolve())

        parents = [p.model_copy(update={"path": fix(p.path)}) for p in self.parents]
        update: dict[str, Any] = {"parents": parents, "base": fix(self.base) if self.base else None}
        if self.revive is not None:
            rv = self.revive
            update["revive"] = rv.model_copy(
                update={
                    "scan": fix(rv.scan) if isinstance(rv.scan, str) else rv.scan,
                    "donor_scan": fix(rv.donor_scan)
                    if isinstance(rv.donor_scan, str)
                    else rv.donor_scan,
                }
            )
        return self.model_copy(update=update)


def _method_problems(recipe: Recipe) -> list[str]:
    """Method name, parameter names, every parameter value (scalars, gradient points,
    rule values) and the number of parents, checked against the method's declaration."""
    if recipe.method not in METHODS:
        return [f"method: {METHODS.unknown_message(recipe.method)}"]
    method = METHODS.get(recipe.method)
    problems = []
    for key, schedule in recipe.parameters.items():
        spec = method.params.get(key)
        if spec is None:
            problems.append(
                f"parameters.{key}: not a parameter of {method.name} "
                f"(known: {', '.join(sorted(method.params)) or 'none'})"
            )
            continue
        problems.extend(_range_problems(f"parameters.{key}", schedule, spec, method.name))
    per_model = sorted(k for k, p in method.params.items() if p.per_model)
    for parent in recipe.parents:
        for key, schedule in parent.parameters.items():
            spec = method.params.get(key)
            where = f"parents[{parent.name}].parameters.{key}"
            if spec is None or not spec.per_model:
                problems.append(
                    f"{where}: not a per-model parameter of "
                    f"{method.name} (known: {', '.join(per_model) or 'none'})"
                )
                continue
            problems.extend(_range_problems(where, schedule, spec, method.name))
    for key, spec in method.params.items():
        if spec.default is not None or key in recipe.parameters or recipe.slices is not None:
            continue  # (stacked slices may give it per slice: checked when planned)
        if not spec.per_model:
            problems.append(f"parameters.{key}: {method.name}'s parameter {key!r} has no value")
            continue
        for parent in recipe.parents:
            if key not in parent.parameters:
                problems.append(
                    f"parents[{parent.name}].parameters.{key}: {method.name}'s parameter "
                    f"{key!r} has no value for parent {parent.name} (give it here or in "
                    "parameters)"
                )
    if method.joint_check is not None:
        for parent in recipe.parents:
            scalars = _scalar_model_params(method, parent, recipe)
            problem = method.joint_check(scalars) if scalars is not None else None
            if problem:
                problems.append(f"parents[{parent.name}].parameters: {problem}")
    if method.needs_base and recipe.base is None:
        problems.append(f"base: method {method.name} needs a base model")
    n = len(recipe.parents)
    too_few_or_many = n < method.min_inputs or (
        method.max_inputs is not None and n > method.max_inputs
    )
    if too_few_or_many and recipe.slices is None:  # (stacked: counted per slice)
        problems.append(f"parents: {method.name} merges {method.inputs_text()} parents, got {n}")
    return problems


def _slice_problems(recipe: Recipe) -> list[str]:
    """Layer stacking: known parents, equal ranges per slice, input counts per slice,
    parameter values; what stacking cannot combine with is refused."""
    problems: list[str] = []
    if recipe.base is not None:
        problems.append("slices: layer stacking with a base model is not supported; drop base")
    if recipe.transplants or recipe.revive is not None or recipe.router != MERGED:
        problems.append(
            "slices: layer stacking takes no transplants, revive or router rules "
            "(the child's layers are not the parents' layers)"
        )
    if not recipe.slices:
        problems.append("slices: give at least one slice")
        return problems
    names = {p.name for p in recipe.parents}
    method = METHODS.get(recipe.method) if recipe.method in METHODS else None
    for i, sl in enumerate(recipe.slices):
        lengths = {s.layers[1] - s.layers[0] for s in sl.sources}
        if len(lengths) != 1:
            problems.append(
                f"slices[{i}]: every source must span the same number of layers, got "
                + ", ".join(f"{s.parent} {list(s.layers)}" for s in sl.sources)
            )
        for j, src in enumerate(sl.sources):
            if src.parent not in names:
                problems.append(
                    f"slices[{i}].sources[{j}].parent: {src.parent!r} is not a parent "
                    f"({', '.join(sorted(names))})"
                )
        if method is None:
            continue
        n = len(sl.sources)
        if n < method.min_inputs or (method.max_inputs is not None and n > method.max_inputs):
            problems.append(
                f"slices[{i}].sources: {method.name} merges {method.inputs_text()} sources, got {n}"
            )
        for key, schedule in sl.parameters.items():
            spec = method.params.get(key)
            if spec is None:
                problems.append(f"slices[{i}].parameters.{key}: not a parameter of {method.name}")
            else:
                where = f"slices[{i}].parameters.{key}"
                problems.extend(_range_problems(where, schedule, spec, method.name))
        for j, src in enumerate(sl.sources):
            for key, schedule in src.parameters.items():
                spec = method.params.get(key)
                where = f"slices[{i}].sources[{j}].parameters.{key}"
                if spec is None or not spec.per_model:
                    problems.append(f"{where}: not a per-model parameter of {method.name}")
                else:
                    problems.extend(_range_problems(where, schedule, spec, method.name))
    return problems


def _scalar_model_params(
    method: MergeMethod, parent: ParentSpec, recipe: Recipe
) -> dict[str, float | bool] | None:
    """One parent's per-model parameters when every one is a single number everywhere
    (own value, else the recipe's, else the default); None when any varies per tensor
    (then the joint rule is checked per tensor, at merge time)."""
    out: dict[str, float | bool] = {}
    for key, spec in method.params.items():
        if not spec.per_model:
            continue
        value = parent.parameters.get(key, recipe.parameters.get(key, spec.default))
        if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], Rule):
            value = value[0]
        if isinstance(value, list) or value is None or not spec.check(value):
            return None
        out[key] = value
    return out


def _range_problems(where: str, schedule: Schedule, spec: ParamSpec, method: str) -> list[str]:
    """Every value of one schedule that the parameter's declaration refuses."""
    values: list[tuple[str, Any]] = []
    if isinstance(schedule, list) and schedule and isinstance(schedule[0], Rule):
        for i, rule in enumerate(schedule):
            assert isinstance(rule, Rule)
            if isinstance(rule.value, list):
                values.extend((f"[{i}].value[{j}]", v) for j, v in enumerate(rule.value))
            else:
                values.append((f"[{i}].value", rule.value))
    elif isinstance(schedule, list):
        values.extend((f"[{j}]", v) for j, v in enumerate(schedule))
    else:
        values.append(("", schedule))
    return [
        f"{where}{path}: {value!r} is not valid for {method} (must be {spec.describe()})"
        for path, value in values
        if not spec.check(value)
    ]


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    recipe = Recipe.from_yaml(path.read_text(), source=str(path))
    return recipe.resolved_paths(path.parent)


# --- schedule resolution -----------------------------------------------------------------


def _gradient(values: list[float], t: float) -> float:
    if len(values) == 1:
        return float(values[0])
    scaled = min(max(t, 0.0), 1.0) * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * float(values[i0]) + frac * float(values[i1])


def _position(layer: int | None, component: str, first: int, last: int) -> float:
    if layer is None:  # mergekit 0.1.5 reads every non-layer tensor at t = 0
        return 0.0
    if last <= first:
        return 1.0 if last == first else 0.0
    return (layer - first) / (last - first)


def resolve_schedule(
    schedule: Schedule,
    *,
    layer: int | None,
    component: str,
    tensor_name: str,
    num_layers: int,
) -> float | None:
    """Value of ``schedule`` for one tensor, or None when no rule matches."""
    if isinstance(schedule, bool | int | float):
        return float(schedule)
    numbers = [v for v in schedule if isinstance(v, bool | int | float)]
    if len(numbers) == len(schedule):
        return _gradient(
            [float(v) for v in numbers], _position(layer, component, 0, num_layers - 1)
        )
    for rule in schedule:
        assert isinstance(rule, Rule)
        comps = rule.components()
        if comps is not None and component not in comps:
            continue
        if rule.filter is not None and rule.filter not in tensor_name:
            continue
        if rule.layers is not None and (
            layer is None or not rule.layers[0] <= layer <= rule.layers[1]
        ):
            continue
        if isinstance(rule.value, list):
            first, last = rule.layers if rule.layers is not None else (0, num_layers - 1)
            return _gradient(rule.value, _position(layer, component, first, last))
        return float(rule.value)
    return None


def resolve_router(recipe: Recipe, layer: int) -> str:
    """Router source of one layer: a parent name or ``"merged"``."""
    if isinstance(recipe.router, str):
        return recipe.router
    for rule in recipe.router:
        if rule.layers is None or rule.layers[0] <= layer <= rule.layers[1]:
            return rule.source
    return MERGED
