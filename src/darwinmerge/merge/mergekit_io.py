"""mergekit YAML <-> Recipe, for the subset both can express.

Import covers ``models`` or ``slices`` (every slice taking the same layer range from each
model, slices contiguous from layer 0; other slices stack layers: a recipe with
``slices``, :mod:`darwinmerge.merge.stack`), per-model and global parameters given as
scalars, gradients or ``filter`` lists, ``base_model``, ``dtype`` / ``out_dtype`` and every
method of mergekit 0.1.5 (a method's declaration says whether ``base_model`` is the
recipe's base, an optional base, or, for methods that take no base, one more parent
as mergekit merges it), ``tokenizer_source: base | union``. ``modules``, a model as
tokenizer source and the ``tokenizer`` section are refused with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from darwinmerge.config.loader import apply_overrides, read_yaml_config
from darwinmerge.errors import ConfigError
from darwinmerge.merge.methods import METHODS
from darwinmerge.merge.recipe import MERGED, Recipe, Rule

__all__ = [
    "apply_overrides",
    "read_yaml_config",
    "is_mergekit_config",
    "load_any_config",
    "recipe_from_mergekit",
    "recipe_to_mergekit",
    "write_mergekit",
]

# mergekit options that only change how it computes, not what: dropped on import
_COMPUTE_ONLY = {"int8_mask"}
_TASK_VECTOR = {
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
}
# component -> tensor-name substring used when exporting component rules as filters
_COMPONENT_FILTERS = {
    "attn": "self_attn",
    "linear_attn": "linear_attn",
    "experts": "mlp.experts",
    "shared_expert": "mlp.shared_expert.",
    "shared_expert_gate": "mlp.shared_expert_gate",
    "dense_mlp": "mlp",
    "embed": "embed_tokens",
    "lm_head": "lm_head",
    "norm": "layernorm",
}


def is_mergekit_config(data: Any) -> bool:
    return isinstance(data, Mapping) and "merge_method" in data


def _model_path(ref: Any, where: str) -> str:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, Mapping) and "model" in ref:  # {model: path, lora: ...}
        if ref.get("lora"):
            raise ConfigError(f"{where}: LoRA model references are not supported")
        return str(ref["model"])
    raise ConfigError(f"{where}: cannot read model reference {ref!r}")


def _schedule(
    value: Any, where: str, layers: tuple[int, int] | None = None, also: list[str] | None = None
) -> Any:
    """A mergekit ParameterSetting as a darwin Schedule. Slice parameters become rules
    limited to the slice's ``layers``; ``also`` (groups "pre" / "post") repeats them for the
    non-layer tensors mergekit reads with the first / last slice."""
    if layers is not None:
        rules = _schedule(value, where)
        rules = (
            rules
            if isinstance(rules, list) and rules and isinstance(rules[0], Rule)
            else [Rule(value=rules)]
        )
        out = [r.model_copy(update={"layers": layers}) for r in rules]
        if also:
            out += [r.model_copy(update={"component": also}) for r in rules]
        return out
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list) and all(isinstance(v, bool | int | float) for v in value):
        return [float(v) for v in value]
    conds = value if isinstance(value, list) else [value]
    rules = []
    for i, cond in enumerate(conds):
        if not isinstance(cond, Mapping) or "value" not in cond:
            raise ConfigError(f"{where}[{i}]: expected {{filter, value}}, got {cond!r}")
        filt = cond.get("filter")
        v = cond["value"]
        if isinstance(v, str) or (isinstance(v, list) and any(isinstance(x, str) for x in v)):
            raise ConfigError(f"{where}[{i}]: string parameter values are not supported")
        rules.append(
            Rule(
                filter=None if filt in (None, "*") else str(filt),
                value=v if not isinstance(v, list) else [float(x) for x in v],
            )
        )
    return rules


def _merge_schedules(old: Any, new: Any) -> Any:
    def as_rules(s: Any) -> list[Rule]:
        if isinstance(s, list) and s and isinstance(s[0], Rule):
            return list(s)
        return [Rule(value=s)]

    return as_rules(old) + as_rules(new)


def recipe_from_mergekit(
    data: Mapping[str, Any], *, source: str = "<mergekit>", root: Path | None = None
) -> Recipe:
    """Translate a mergekit config (already parsed YAML) into a Recipe."""
    method = str(data["merge_method"])
    for key in ("modules", "tokenizer", "chat_template"):
        if data.get(key):
            raise ConfigError(f"{source}: mergekit '{key}' is not supported by darwinmerge")
    tokenizer_source = data.get("tokenizer_source")
    if tokenizer_source not in (None, "base", "union"):
        raise ConfigError(
            f"{source}: tokenizer_source {tokenizer_source!r} is not supported; "
            "use base or union (or leave it out: the donor parent's tokenizer files)"
        )
    base = data.get("base_model")
    base_path = _model_path(base, f"{source}: base_model") if base is not None else None

    # (model path) -> per-model schedules; global schedules
    order: list[str] = []
    per_model: dict[str, dict[str, Any]] = {}
    global_params: dict[str, Any] = {}
    for key, value in (data.get("parameters") or {}).items():
        if key in _COMPUTE_ONLY:
            continue
        global_params[key] = _schedule(value, f"{source}: parameters.{key}")

    if data.get("models") and data.get("slices"):
        raise ConfigError(f"{source}: give either models or slices, not both")
    if data.get("models"):
        for i, m in enumerate(data["models"]):
            path = _model_path(m, f"{source}: models[{i}]")
            order.append(path)
            params = (m.get("parameters") if isinstance(m, Mapping) else None) or {}
            per_model[path] = {
                k: _schedule(v, f"{source}: models[{i}].parameters.{k}")
                for k, v in params.items()
                if k not in _COMPUTE_ONLY
            }
    elif data.get("slices") and _stacks(data["slices"]):
        return _stacked_recipe(data, method, global_params, base_path, source, root)
    elif data.get("slices"):
        top_level, global_params = global_params, {}
        expect_start = 0
        for si, sl in enumerate(data["slices"]):
            sources = sl.get("sources") or []
            ranges = {tuple(s.get("layer_range", ())) for s in sources}
            if len(ranges) != 1:
                raise ConfigError(
                    f"{source}: slices[{si}] takes different layer ranges from its "
                    f"models; layer stacking (frankenmerge) is not supported"
                )
            start, end = next(iter(ranges))
            if start != expect_start or end <= start:
                raise ConfigError(
                    f"{source}: slices[{si}] layer_range [{start}, {end}] must continue "
                    f"at layer {expect_start}; reordering or repeating layers is not supported"
                )
            expect_start = end
            layers = (int(start), int(end) - 1)
            # mergekit reads embeddings with the first slice, norm / lm_head with the last
            also = (["pre"] if si == 0 else []) + (
                ["post"] if si == len(data["slices"]) - 1 else []
            )
            for key, value in (sl.get("parameters") or {}).items():
                if key in _COMPUTE_ONLY:
                    continue
                sched = _schedule(value, f"{source}: slices[{si}].parameters.{key}", layers, also)
                global_params[key] = (
                    _merge_schedules(global_params[key], sched) if key in global_params else sched
                )
            for mi, s in enumerate(sources):
                path = _model_path(s.get("model"), f"{source}: slices[{si}].sources[{mi}]")
                if path not in per_model:
                    order.append(path)
                    per_model[path] = {}
                for key, value in (s.get("parameters") or {}).items():
                    if key in _COMPUTE_ONLY:
                        continue
                    sched = _schedule(
                        value,
                        f"{source}: slices[{si}].sources[{mi}].parameters.{key}",
                        layers,
                        also,
                    )
                    cur = per_model[path]
                    cur[key] = _merge_schedules(cur[key], sched) if key in cur else sched
        # slice rules are more specific than the top-level parameters: they come first
        for key, value in top_level.items():
            global_params[key] = (
                _merge_schedules(global_params[key], value) if key in global_params else value
            )
    else:
        raise ConfigError(f"{source}: a mergekit config needs models or slices")

    if method == "slerp":
        if base_path is None:
            raise ConfigError(f"{source}: slerp needs base_model (the t=0 end)")
        others = [p for p in order if p != base_path]
        if len(others) != 1:
            raise ConfigError(f"{source}: slerp merges base_model with exactly one other model")
        parent_paths, recipe_base = [base_path, others[0]], None
    elif method in _TASK_VECTOR or _declared(method, "needs_base"):
        if base_path is None:
            raise ConfigError(f"{source}: {method} needs base_model")
        parent_paths, recipe_base = [p for p in order if p != base_path], base_path
    elif base_path is not None and _declared(method, "optional_base"):
        # nuslerp, multislerp: with a base they interpolate the task vectors
        parent_paths, recipe_base = [p for p in order if p != base_path], base_path
    else:
        parent_paths, recipe_base = list(order), None
        if base_path is not None and base_path not in parent_paths:
            parent_paths.append(base_path)

    names = _unique_names(parent_paths)
    parents = []
    for name, path in zip(names, parent_paths, strict=True):
        parents.append({"name": name, "path": path, "parameters": per_model.get(path, {})})
    dtype = data.get("out_dtype") or data.get("dtype")
    fields: dict[str, Any] = {}
    if tokenizer_source is not None:
        fields["tokenizer_source"] = tokenizer_source
        if recipe_base is None and base_path in parent_paths:
            # mergekit's tokenizer base is its base_model: here the donor
            fields["donor"] = names[parent_paths.index(base_path)]
    recipe = Recipe.parse(
        {
            "parents": parents,
            "base": recipe_base,
            "method": method,
            "parameters": global_params,
            "dtype": dtype,
            **fields,
        },
        source=source,
    )
    return recipe.resolved_paths(root) if root is not None else recipe


def _source_models(sl: Mapping[str, Any], where: str) -> list[str]:
    return [
        _model_path(s.get("model"), f"{where}.sources[{i}]")
        for i, s in enumerate(sl.get("sources") or [])
    ]


def _stacks(slices: Sequence[Mapping[str, Any]]) -> bool:
    """Whether mergekit ``slices`` stack layers: a slice takes different ranges from its
    models, the slices do not continue each other from layer 0, or they take different
    models (else every slice merges the same layers of the same models)."""
    expect, models = 0, None
    for i, sl in enumerate(slices):
        ranges = {tuple(s.get("layer_range", ())) for s in sl.get("sources") or []}
        these = _source_models(sl, f"slices[{i}]")
        if len(ranges) != 1 or (models is not None and these != models):
            return True
        start, end = next(iter(ranges))
        if start != expect:
            return True
        expect, models = end, these
    return False


def _stacked_recipe(
    data: Mapping[str, Any],
    method: str,
    global_params: dict[str, Any],
    base_path: str | None,
    source: str,
    root: Path | None,
) -> Recipe:
    """mergekit slices that stack layers as a recipe with ``slices``. slerp's
    ``base_model`` is the first source of each slice (its t = 0 end)."""
    paths: list[str] = []
    slices: list[dict[str, Any]] = []
    raw = list(data["slices"])
    for si, sl in enumerate(raw):
        where = f"{source}: slices[{si}]"
        if sl.get("base_model") is not None:
            raise ConfigError(f"{where}.base_model: a per-slice base model is not supported")
        sources = []
        for mi, s in enumerate(sl.get("sources") or []):
            path = _model_path(s.get("model"), f"{where}.sources[{mi}]")
            if path not in paths:
                paths.append(path)
            layer_range = s.get("layer_range")
            if not (isinstance(layer_range, list | tuple) and len(layer_range) == 2):
                raise ConfigError(f"{where}.sources[{mi}].layer_range: expected [start, end]")
            params = {
                k: _schedule(v, f"{where}.sources[{mi}].parameters.{k}")
                for k, v in (s.get("parameters") or {}).items()
                if k not in _COMPUTE_ONLY
            }
            sources.append(
                {"path": path, "layers": [int(x) for x in layer_range], "parameters": params}
            )
        if method == "slerp" and base_path is not None:  # the t = 0 end first
            sources.sort(key=lambda src: src["path"] != base_path)
        slices.append(
            {
                "sources": sources,
                "parameters": {
                    k: _schedule(v, f"{where}.parameters.{k}")
                    for k, v in (sl.get("parameters") or {}).items()
                    if k not in _COMPUTE_ONLY
                },
            }
        )
    names = dict(zip(paths, _unique_names(paths), strict=True))
    recipe_slices = [
        {
            "sources": [
                {
                    "parent": names[src["path"]],
                    "layers": src["layers"],
                    "parameters": src["parameters"],
                }
                for src in sl["sources"]
            ],
            "parameters": sl["parameters"],
        }
        for sl in slices
    ]
    uses_base = method not in ("slerp",) and (
        method in _TASK_VECTOR or _declared(method, "takes_base")
    )
    recipe = Recipe.parse(
        {
            "parents": [{"name": names[p], "path": p} for p in paths],
            "base": base_path if uses_base else None,
            "method": method,
            "parameters": global_params,
            "dtype": data.get("out_dtype") or data.get("dtype"),
            "slices": recipe_slices,
        },
        source=source,
    )
    return recipe.resolved_paths(root) if root is not None else recipe


def _declared(method: str, flag: str) -> bool:
    """A flag of the method's declaration (False for a name not declared: the recipe
    then reports the unknown method with its did-you-mean)."""
    return method in METHODS and bool(getattr(METHODS.get(method), flag))


def _unique_names(paths: list[str]) -> list[str]:
    names: list[str] = []
    for p in paths:
        stem = "".join(c if c.isalnum() or c in "_.-" else "_" for c in Path(p).name) or "model"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.append(name)
    return names


def _export_schedule(value: Any, where: str) -> Any:
    if not (isinstance(value, list) and value and isinstance(value[0], Rule)):
        return value
    out = []
    for rule in value:
        if rule.layers is not None:
            raise ConfigError(
                f"{where}: per-layer-range rules are not expressible as mergekit models"
            )
        filters: list[str | None] = [rule.filter]
        if rule.component is not None:
            # a group (attention: attn + linear_attn) is one filter rule per component
            comps = sorted(rule.components() or ())
            if rule.filter is not None or not all(c in _COMPONENT_FILTERS for c in comps):
                raise ConfigError(
                    f"{where}: component rule {rule.component!r} has no mergekit filter"
                )
            filters = [_COMPONENT_FILTERS[c] for c in comps]
        for filt in filters:
            item: dict[str, Any] = {"value": rule.value}
            if filt is not None:
                item["filter"] = filt
            out.append(item)
    return out


#: darwinmerge's own methods: mergekit has no equivalent
_OWN_METHODS = frozenset({"trimmed_lerp", "trimmed_task_lerp"})


def _export_params(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {k: _export_schedule(v, f"{where}.{k}") for k, v in params.items()}


def recipe_to_mergekit(recipe: Recipe) -> dict[str, Any]:
    """The mergekit config for a recipe, where expressible (else ConfigError saying why).

    A base the method does not use is left out (mergekit would merge it as one more
    model); a stacked recipe becomes ``slices``."""
    if recipe.method in _OWN_METHODS:
        raise ConfigError(
            f"method {recipe.method} is darwinmerge's own; mergekit has no equivalent"
        )
    if recipe.transplants:
        raise ConfigError("expert transplants are not expressible in mergekit")
    if recipe.revive is not None:
        raise ConfigError("dead-expert revival (revive:) is not expressible in mergekit")
    if recipe.router != MERGED:
        raise ConfigError("a per-layer router source is not expressible in mergekit")
    out: dict[str, Any] = {"merge_method": recipe.method}
    if recipe.slices is not None:
        out.update(_slices_to_mergekit(recipe))
    else:
        models: list[dict[str, Any]] = []
        for p in recipe.parents:
            entry: dict[str, Any] = {"model": p.path}
            if p.parameters:
                entry["parameters"] = _export_params(p.parameters, f"parents[{p.name}]")
            models.append(entry)
        if recipe.method == "slerp":
            out["base_model"] = recipe.parents[0].path
        elif recipe.base and (
            recipe.method in _TASK_VECTOR or _declared(recipe.method, "takes_base")
        ):
            out["base_model"] = recipe.base
        out["models"] = models
    if recipe.parameters:
        out["parameters"] = _export_params(recipe.parameters, "parameters")
    if recipe.dtype:
        out["dtype"] = recipe.dtype
    if recipe.tokenizer_source is not None:
        out.update(_tokenizer_to_mergekit(recipe, out.get("base_model")))
    return out


def _tokenizer_to_mergekit(recipe: Recipe, base_model: str | None) -> dict[str, Any]:
    """``tokenizer_source``, and ``base_model`` where needed: mergekit's tokenizer base
    is its base_model, ours the recipe's base, else its donor."""
    out: dict[str, Any] = {"tokenizer_source": recipe.tokenizer_source}
    if recipe.base is not None:
        if base_model != recipe.base:  # a base the method does not take
            raise ConfigError(
                f"tokenizer_source: {recipe.method} takes no base, so mergekit cannot "
                "take the tokenizer base from it"
            )
        return out
    donor = recipe.parent(recipe.donor_name).path
    if base_model is not None and base_model != donor:
        raise ConfigError(
            f"tokenizer_source: mergekit's tokenizer base would be {base_model}, the "
            f"recipe's is its donor {recipe.donor_name}"
        )
    if base_model is None:
        if _declared(recipe.method, "optional_base"):
            raise ConfigError(
                f"tokenizer_source: {recipe.method} without a base has no base_model to "
                "name the tokenizer base in mergekit"
            )
        out["base_model"] = donor  # a method that ignores it: only the tokenizer's base
    return out


def _slices_to_mergekit(recipe: Recipe) -> dict[str, Any]:
    """``slices`` (and slerp's ``base_model``: the first source of every slice)."""
    assert recipe.slices is not None
    out: dict[str, Any] = {}
    if recipe.method == "slerp":
        firsts = {sl.sources[0].parent for sl in recipe.slices}
        if len(firsts) != 1:
            raise ConfigError(
                "slices: slerp's t = 0 end differs between slices "
                f"({', '.join(sorted(firsts))}); mergekit takes one base_model"
            )
        out["base_model"] = recipe.parent(firsts.pop()).path
    slices = []
    for i, sl in enumerate(recipe.slices):
        sources = []
        for j, src in enumerate(sl.sources):
            parent = recipe.parent(src.parent)
            entry: dict[str, Any] = {"model": parent.path, "layer_range": list(src.layers)}
            params = {**parent.parameters, **src.parameters}
            if params:
                entry["parameters"] = _export_params(params, f"slices[{i}].sources[{j}]")
            sources.append(entry)
        item: dict[str, Any] = {"sources": sources}
        if sl.parameters:
            item["parameters"] = _export_params(sl.parameters, f"slices[{i}].parameters")
        slices.append(item)
    out["slices"] = slices
    return out


def write_mergekit(recipe: Recipe, path: str | Path) -> Path:
    """Write the recipe as a mergekit YAML at ``path`` (ConfigError, one line, naming
    what mergekit cannot express, and nothing written, where it cannot)."""
    data = recipe_to_mergekit(recipe)
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_any_config(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """A darwin recipe or a mergekit YAML, recognised by its keys, with overrides."""
    path = Path(path)
    data = read_yaml_config(path, overrides)
    if is_mergekit_config(data):
        return recipe_from_mergekit(data, source=str(path), root=path.parent)
    return Recipe.parse(data, source=str(path)).resolved_paths(path.parent)
