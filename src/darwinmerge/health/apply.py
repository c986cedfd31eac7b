"""Prescriptions onto recipes: typed changes -> rules placed before the existing ones.

``t`` of a (layer, component) is the share of parent B (``recipe.parents[1]``):

* ``slerp``: the recipe's ``t`` schedule;
* weight methods (``linear``, ``task_arithmetic``, ``ties`` ...): ``w_B / (w_A + w_B)`` with
  each parent's ``weight`` schedule (the parent's own, else the recipe's).

Moving a layer toward a parent (:class:`MoveLayerT`): slerp's ``t`` moves a ``step`` of
the way; for weight methods the pair ``(w_A, w_B)`` moves a ``step`` of the way to the
parent's one-hot ``(1, 0)`` or ``(0, 1)``. Every new rule
names its layer (``layers: [l, l]``) and component, and is prepended: the first matching
rule wins, so it overrides the recipe's value there and nowhere else. Filter rules
(``filter:``) are not read when resolving ``t`` (they name single tensors, not layers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from darwinmerge.errors import ConfigError
from darwinmerge.health.changes import (
    MoveLayerT,
    RecipeChange,
    Revive,
    ScaleDensity,
    SetLayerT,
    SetRouter,
)
from darwinmerge.health.verdict import Verdict
from darwinmerge.merge.recipe import (
    COMPONENT_GROUPS,
    Recipe,
    RouterRule,
    Rule,
    Schedule,
    resolve_schedule,
)

__all__ = ["LAYER_COMPONENTS", "apply_changes", "apply_prescription", "layer_t"]

#: Components stored inside a decoder layer (what a layer-wide change expands to).
LAYER_COMPONENTS = (
    "attn", "linear_attn", "norm", "router", "shared_expert", "shared_expert_gate",
    "experts", "dense_mlp",
)  # fmt: skip


def _components(component: str | None) -> tuple[str, ...]:
    if component is None:
        return LAYER_COMPONENTS
    return COMPONENT_GROUPS.get(component, (component,))


def _check_two_parents(recipe: Recipe) -> None:
    if len(recipe.parents) != 2:
        raise ConfigError(
            f"health prescriptions need a two-parent recipe (A = t 0, B = t 1); this one has "
            f"{len(recipe.parents)} parents"
        )


def _method_params(recipe: Recipe) -> set[str]:
    """Names of the method's per-model parameters."""
    from darwinmerge.merge.ops import METHODS

    method = METHODS.get(recipe.method)
    names = set(getattr(method, "model_params", None) or {})
    params = getattr(method, "params", None)
    if isinstance(params, dict):
        names |= {k for k, spec in params.items() if getattr(spec, "per_model", False)}
    return names


def _lookup(schedules: Sequence[dict[str, Schedule]], key: str, where: dict[str, Any]) -> Any:
    for sched in schedules:
        if key in sched:
            value = resolve_schedule(sched[key], **where)
            if value is not None:
                return value
    return None


def _where(layer: int, component: str, num_layers: int) -> dict[str, Any]:
    return {"layer": layer, "component": component, "tensor_name": "", "num_layers": num_layers}


def _weights(
    recipe: Recipe, layer: int, component: str, num_layers: int
) -> tuple[float, float] | None:
    where = _where(layer, component, num_layers)
    a, b = recipe.parents
    wa = _lookup([dict(a.parameters), dict(recipe.parameters)], "weight", where)
    wb = _lookup([dict(b.parameters), dict(recipe.parameters)], "weight", where)
    if wa is None or wb is None:
        return None
    return float(wa), float(wb)


def _t_method(recipe: Recipe) -> bool:
    """A method whose merge is set by a global ``t`` (B's share): slerp, trimmed_lerp ...
    (else per-parent weights)."""
    from darwinmerge.merge.ops import METHODS

    return "t" in METHODS.get(recipe.method).params


def layer_t(recipe: Recipe, layer: int, component: str, num_layers: int) -> float | None:
    """``t`` (share of parent B) of ``component`` in ``layer``, or None when the recipe
    gives none there (or the weights sum to zero)."""
    _check_two_parents(recipe)
    if _t_method(recipe):
        value = _lookup([dict(recipe.parameters)], "t", _where(layer, component, num_layers))
        return None if value is None else float(value)
    w = _weights(recipe, layer, component, num_layers)
    if w is None or w[0] + w[1] == 0:
        return None
    return w[1] / (w[0] + w[1])


def _as_rules(schedule: Schedule | None) -> list[Rule]:
    if schedule is None:
        return []
    if isinstance(schedule, bool | int | float):
        return [Rule(value=schedule)]
    if all(isinstance(v, bool | int | float) for v in schedule):
        return [Rule(value=[float(v) for v in schedule])]  # type: ignore[arg-type]
    return [r for r in schedule if isinstance(r, Rule)]


def _prepend(params: dict[str, Schedule], key: str, rules: list[Rule]) -> dict[str, Schedule]:
    out = dict(params)
    out[key] = rules + _as_rules(params.get(key))
    return out


def _grouped(values: dict[str, float]) -> list[tuple[list[str], float]]:
    by_value: dict[float, list[str]] = {}
    for comp, v in values.items():
        by_value.setdefault(round(v, 12), []).append(comp)
    return [(comps, v) for v, comps in by_value.items()]


def _pin(
    params: dict[str, Schedule], key: str, layer: int, values: dict[str, float]
) -> dict[str, Schedule]:
    """``params`` with rules pinning ``key`` per component of ``layer`` prepended."""
    rules = [Rule(component=comps, layers=(layer, layer), value=v) for comps, v in _grouped(values)]
    return _prepend(params, key, rules)


def _move(recipe: Recipe, layer: int, comp: str | None, toward: str, step: float, n: int) -> Recipe:
    """slerp: ``t' = t + step * (target - t)``. Weight methods: the layer's weight vector
    moves toward the parent's one-hot, ``w' = (1 - step) * w + step * e_target`` (the same
    move of t when the weights sum to 1; a scaled layer is also pulled back to sum 1)."""
    target = 0.0 if toward == "A" else 1.0
    comps = [c for c in _components(comp) if layer_t(recipe, layer, c, n) is not None]
    if not comps:
        return recipe
    if _t_method(recipe):
        new_t = {}
        for c in comps:
            t = layer_t(recipe, layer, c, n)
            assert t is not None
            new_t[c] = t + step * (target - t)
        params = _pin(dict(recipe.parameters), "t", layer, new_t)
        return recipe.model_copy(update={"parameters": params})
    new_w: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for c in comps:
        w = _weights(recipe, layer, c, n)
        assert w is not None
        new_w[0][c] = (1.0 - step) * w[0] + step * (1.0 - target)
        new_w[1][c] = (1.0 - step) * w[1] + step * target
    parents = [
        p.model_copy(update={"parameters": _pin(dict(p.parameters), "weight", layer, vals)})
        for p, vals in zip(recipe.parents, new_w, strict=True)
    ]
    return recipe.model_copy(update={"parents": parents})


def _usual_sum(recipe: Recipe, component: str, n: int) -> float:
    """Median of ``w_A + w_B`` of ``component`` over the recipe's layers (1 when none)."""
    sums = []
    for layer in range(n):
        w = _weights(recipe, layer, component, n)
        if w is not None:
            sums.append(w[0] + w[1])
    if not sums:
        return 1.0
    sums.sort()
    mid = len(sums) // 2
    return sums[mid] if len(sums) % 2 else 0.5 * (sums[mid - 1] + sums[mid])


def _drop_transplants(recipe: Recipe, layer: int) -> Recipe:
    kept = [tp for tp in recipe.transplants if tp.layer != layer]
    if len(kept) == len(recipe.transplants):
        return recipe
    return recipe.model_copy(update={"transplants": kept})


def _set_t(recipe: Recipe, change: SetLayerT, n: int) -> Recipe:
    """Pin ``t`` of each named component of the layer (slerp-like methods) or the
    weights ``s * (1 - t, t)`` (weight methods, ``s`` = :func:`_usual_sum`)."""
    layer = change.layer
    if {c for c, _ in change.values} & {"experts", "router"}:
        recipe = _drop_transplants(recipe, layer)  # merged at t again: transplants go
    values = {c: t for c, t in change.values if layer_t(recipe, layer, c, n) is not None}
    if not values:
        return recipe
    if _t_method(recipe):
        params = _pin(dict(recipe.parameters), "t", layer, values)
        return recipe.model_copy(update={"parameters": params})
    new_w: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for c, t in values.items():
        s = _usual_sum(recipe, c, n)
        new_w[0][c] = s * (1.0 - t)
        new_w[1][c] = s * t
    parents = [
        p.model_copy(update={"parameters": _pin(dict(p.parameters), "weight", layer, vals)})
        for p, vals in zip(recipe.parents, new_w, strict=True)
    ]
    return recipe.model_copy(update={"parents": parents})


def _scale_density(recipe: Recipe, change: ScaleDensity, n: int) -> Recipe:
    if "density" not in _method_params(recipe):
        return _move(
            recipe, change.layer, change.component, change.fallback_toward, change.fallback_step, n
        )
    parents = []
    for p in recipe.parents:
        vals: dict[str, float] = {}
        for c in _components(change.component):
            where = _where(change.layer, c, n)
            d = _lookup([dict(p.parameters), dict(recipe.parameters)], "density", where)
            vals[c] = (1.0 if d is None else float(d)) * change.factor
        parents.append(
            p.model_copy(
                update={"parameters": _pin(dict(p.parameters), "density", change.layer, vals)}
            )
        )
    return recipe.model_copy(update={"parents": parents})


def _side_name(recipe: Recipe, side: str) -> str:
    return recipe.parents[0 if side == "A" else 1].name


def _revive(recipe: Recipe, change: Revive) -> Recipe:
    from darwinmerge.merge.recipe import Transplant

    source = _side_name(recipe, change.source)
    replaced = {(change.layer, e) for e in change.experts}
    kept = [tp for tp in recipe.transplants if (tp.layer, tp.expert) not in replaced]
    new = [Transplant(layer=change.layer, expert=e, source=source) for e in change.experts]
    return recipe.model_copy(update={"transplants": kept + new})


def _set_router(recipe: Recipe, change: SetRouter) -> Recipe:
    rule = RouterRule(layers=(change.layer, change.layer), source=_side_name(recipe, change.source))
    old = [RouterRule(source=recipe.router)] if isinstance(recipe.router, str) else recipe.router
    return recipe.model_copy(update={"router": [rule, *old]})


def apply_changes(recipe: Recipe, changes: Iterable[RecipeChange], num_layers: int) -> Recipe:
    """``recipe`` with ``changes`` applied in order, re-validated (a :class:`ConfigError`
    names the problem when the result is not a valid recipe)."""
    _check_two_parents(recipe)
    out = recipe
    for change in changes:
        if not 0 <= change.layer < num_layers:
            raise ConfigError(f"{change.describe()}: layer outside 0..{num_layers - 1}")
        if isinstance(change, MoveLayerT):
            if change.step >= 1.0 and set(_components(change.component)) & {"experts", "router"}:
                # the layer's experts come from that parent now: its transplants go
                out = _drop_transplants(out, change.layer)
            out = _move(out, change.layer, change.component, change.toward, change.step, num_layers)
        elif isinstance(change, ScaleDensity):
            out = _scale_density(out, change, num_layers)
        elif isinstance(change, SetLayerT):
            out = _set_t(out, change, num_layers)
        elif isinstance(change, Revive):
            out = _revive(out, change)
        else:
            out = _set_router(out, change)
    return Recipe.parse(out.model_dump(mode="python"), source="health prescription")


def apply_prescription(recipe: Recipe, verdict: Verdict) -> Recipe:
    """The recipe with the verdict's whole prescription applied (a validated Recipe)."""
    return apply_changes(recipe, verdict.prescription, verdict.num_layers)
