"""Typed recipe changes: what a health prescription asks of the next merge.

Parents are named by their position in the recipe: ``"A"`` is ``recipe.parents[0]``
(``t = 0``) and ``"B"`` is ``recipe.parents[1]`` (``t = 1``). A change is plain data
(JSON round trip through :func:`change_to_dict` / :func:`change_from_dict`);
:func:`darwinmerge.health.apply_prescription` turns changes into recipe rules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from darwinmerge.errors import ConfigError

__all__ = [
    "MoveLayerT",
    "RecipeChange",
    "Revive",
    "ScaleDensity",
    "SetLayerT",
    "SetRouter",
    "Side",
    "change_from_dict",
    "change_to_dict",
]

Side = Literal["A", "B"]


@dataclass(frozen=True)
class MoveLayerT:
    """Move ``t`` (the share of parent B) of ``layer`` a ``step`` of the way toward
    ``toward``: ``t' = t + step * (target - t)`` with target 0 for A, 1 for B.
    ``component`` None means every component of the layer (each keeps its own t)."""

    layer: int
    toward: Side
    step: float
    reason: str
    component: str | None = None
    kind: Literal["move_t"] = field(default="move_t", init=False)

    def describe(self) -> str:
        where = f"L{self.layer}" + (f" {self.component}" if self.component else "")
        return f"{where}: move t {self.step:.0%} of the way toward parent {self.toward}"


@dataclass(frozen=True)
class ScaleDensity:
    """Multiply every parent's density at ``layer`` by ``factor`` (methods with a
    per-model ``density``). For methods without one, the same layer's t moves
    ``fallback_step`` toward ``fallback_toward`` (the parent whose profile is closest
    to the child's there)."""

    layer: int
    factor: float
    fallback_toward: Side
    fallback_step: float
    reason: str
    component: str | None = None
    kind: Literal["scale_density"] = field(default="scale_density", init=False)

    def describe(self) -> str:
        where = f"L{self.layer}" + (f" {self.component}" if self.component else "")
        return (
            f"{where}: density x{self.factor:g} (no density parameter: move t "
            f"{self.fallback_step:.0%} toward {self.fallback_toward})"
        )


@dataclass(frozen=True)
class Revive:
    """Child experts ``experts`` of ``layer`` are transplanted verbatim from ``source``
    (same expert index; the router row moves along)."""

    layer: int
    experts: tuple[int, ...]
    source: Side
    reason: str
    kind: Literal["revive"] = field(default="revive", init=False)

    def describe(self) -> str:
        ex = ", ".join(str(e) for e in self.experts)
        return f"L{self.layer}: revive experts [{ex}] from parent {self.source}"


@dataclass(frozen=True)
class SetRouter:
    """The router of ``layer`` is copied from ``source`` instead of merged."""

    layer: int
    source: Side
    reason: str
    kind: Literal["set_router"] = field(default="set_router", init=False)

    def describe(self) -> str:
        return f"L{self.layer}: router from parent {self.source}"


@dataclass(frozen=True)
class SetLayerT:
    """Set ``t`` (the share of parent B) of each named component of ``layer``:
    ``values`` is ``((component, t), ...)``. Weight methods get the pair
    ``s * (1 - t, t)`` with ``s`` the median of ``w_A + w_B`` over the recipe's layers for
    that component (the layer's weights are put back on the recipe's usual scale)."""

    layer: int
    values: tuple[tuple[str, float], ...]
    reason: str
    kind: Literal["set_t"] = field(default="set_t", init=False)

    def describe(self) -> str:
        vals = ", ".join(f"{c} {t:.2f}" for c, t in self.values)
        return f"L{self.layer}: set t to {vals}"


RecipeChange = MoveLayerT | ScaleDensity | Revive | SetRouter | SetLayerT

_KINDS: dict[str, type[Any]] = {
    "move_t": MoveLayerT,
    "scale_density": ScaleDensity,
    "revive": Revive,
    "set_router": SetRouter,
    "set_t": SetLayerT,
}


def change_to_dict(change: RecipeChange) -> dict[str, Any]:
    out = dataclasses.asdict(change)
    if "experts" in out:
        out["experts"] = list(out["experts"])
    if "values" in out:
        out["values"] = [[c, float(t)] for c, t in out["values"]]
    return out


def change_from_dict(data: dict[str, Any]) -> RecipeChange:
    kind = data.get("kind")
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise ConfigError(f"unknown recipe change kind {kind!r}; known: {', '.join(_KINDS)}")
    kwargs = {k: v for k, v in data.items() if k != "kind"}
    if "experts" in kwargs:
        kwargs["experts"] = tuple(int(e) for e in kwargs["experts"])
    if "values" in kwargs:
        kwargs["values"] = tuple((str(c), float(t)) for c, t in kwargs["values"])
    try:
        obj: RecipeChange = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"recipe change {kind}: {exc}") from None
    return obj
