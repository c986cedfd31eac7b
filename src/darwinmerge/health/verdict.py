"""The :class:`Verdict` info object: flags, numbers, summary and prescription of one check.

Plain dataclasses of JSON values (``to_dict`` / ``from_dict``; ``save`` writes
``verdict.json``). The report renders it; tests assert on it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from darwinmerge.atomic import write_text_atomic
from darwinmerge.errors import CheckpointError
from darwinmerge.health.changes import RecipeChange, change_from_dict, change_to_dict

__all__ = [
    "CategoryLoss",
    "LayerFlag",
    "RoutingFlag",
    "Verdict",
    "VERDICT_FILE",
    "every_layer_deviates",
]

VERDICT_FILE = "verdict.json"

LayerKind = Literal["interference", "function_loss"]


def every_layer_deviates(deviating: Sequence[Sequence[str]]) -> bool:
    """True when each of two or more layers has a deviating component (``deviating``: one
    list of components per layer): then the weights single out no layer (a sparsifying
    merge such as trimmed_lerp with density < 1 leaves every layer off the parents' line
    by a different amount). Localization and the verdict's summary both read it."""
    return len(deviating) > 1 and all(deviating)


RoutingKind = Literal["entropy_collapse", "experts_died", "experts_revived"]


@dataclass(frozen=True)
class LayerFlag:
    """One flagged (layer, probe category). ``excess`` is how far the child's BI lies
    outside the parents' band (above ``hi`` for interference, below ``lo`` for function
    loss); ``threshold`` the margin it had to pass; ``severity = excess / threshold``
    (> 1 for every flag)."""

    layer: int
    category: str
    kind: LayerKind
    child: float
    parent_a: float
    parent_b: float
    excess: float
    threshold: float
    severity: float


@dataclass(frozen=True)
class RoutingFlag:
    """One sparse layer's routing change. ``experts`` for died / revived experts;
    ``source`` the parent where the died experts are alive (most utilised).

    ``loss_evidence``: the probes show a loss that goes with it (a category whose probe
    loss is worse than both parents', or this layer localized by the swap scans). Only
    then does a died expert or a collapsed router count as a problem and get a
    prescription; without it the flag is information (verdicts saved before the field
    existed read as True, their old meaning)."""

    layer: int
    kind: RoutingKind
    child: float
    parent_a: float
    parent_b: float
    threshold: float
    experts: tuple[int, ...] = ()
    source: str | None = None
    loss_evidence: bool = True

    @property
    def problem(self) -> bool:
        """A died expert or an entropy collapse with loss evidence (a revival never is)."""
        return self.kind != "experts_revived" and self.loss_evidence


@dataclass(frozen=True)
class CategoryLoss:
    """Probe loss of one category: ``status`` is ``better`` (below both parents),
    ``between``, or ``worse`` (above ``max * (1 + loss_rel)``, a flag)."""

    category: str
    child: float
    parent_a: float
    parent_b: float
    status: Literal["better", "between", "worse"]


@dataclass
class Verdict:
    """Result of :func:`darwinmerge.health.health_check`."""

    child: str
    parent_a: str
    parent_b: str
    categories: list[str]
    num_layers: int
    sparse_layers: list[int]
    options: dict[str, Any]
    bi_child: list[list[float]]  # [C][L]
    bi_a: list[list[float]]
    bi_b: list[list[float]]
    strength: list[list[float]]  # [C][L] signed flag strength (check.flag_strength)
    layer_flags: list[LayerFlag]
    routing_flags: list[RoutingFlag]
    losses: list[CategoryLoss]
    prescription: list[RecipeChange]
    summary: str = ""
    notes: list[str] = field(default_factory=list)
    #: the swap-scan localization (``Localization.to_dict()``), when it was run
    localization: dict[str, Any] | None = None
    probe_sequences: int = 0  # probe sequences of the scans
    probe_targets: int = 0  # scored tokens (the scans' loss targets) over them

    @property
    def localized(self) -> list[int]:
        """Layers the localization flagged, largest recovery first ([] when not run)."""
        return [] if self.localization is None else list(self.localization["flagged"])

    @property
    def healthy(self) -> bool:
        """No localized layer (or, without localization, no BI layer flag), no died
        expert or entropy collapse with loss evidence (:attr:`RoutingFlag.problem`), no
        worse probe loss."""
        layer_problem = bool(self.localized if self.localization is not None else self.layer_flags)
        return not (
            layer_problem
            or any(f.problem for f in self.routing_flags)
            or any(c.status == "worse" for c in self.losses)
        )

    def layer_severity(self) -> np.ndarray:
        """[L] the largest severity of any flag at each layer (0 where none)."""
        out = np.zeros(self.num_layers)
        for f in self.layer_flags:
            out[f.layer] = max(out[f.layer], f.severity)
        return out

    def layer_strength(self) -> np.ndarray:
        """[L] the largest |signed strength| over categories (continuous; > 1 = flagged)."""
        return np.abs(np.asarray(self.strength, dtype=float)).max(axis=0)

    def flags_at(self, layer: int) -> list[LayerFlag]:
        return [f for f in self.layer_flags if f.layer == layer]

    # --- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "verdict", "healthy": self.healthy}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "prescription":
                out[f.name] = [change_to_dict(c) for c in value]
            elif f.name in ("layer_flags", "routing_flags", "losses"):
                out[f.name] = [_plain(dataclasses.asdict(x)) for x in value]
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        kw = {k: v for k, v in data.items() if k not in ("kind", "healthy")}
        kw["layer_flags"] = [LayerFlag(**x) for x in data["layer_flags"]]
        kw["routing_flags"] = [
            RoutingFlag(**{**x, "experts": tuple(x.get("experts", ()))})
            for x in data["routing_flags"]
        ]
        kw["losses"] = [CategoryLoss(**x) for x in data["losses"]]
        kw["prescription"] = [change_from_dict(x) for x in data["prescription"]]
        kw.setdefault("localization", None)
        return cls(**kw)

    def save(self, out_dir: str | Path) -> Path:
        p = Path(out_dir) / VERDICT_FILE
        p.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(p, json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Verdict:
        p = Path(path)
        if p.is_dir():
            p = p / VERDICT_FILE
        if not p.is_file():
            raise CheckpointError(f"{p}: verdict file not found; run `darwin health` first")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{p}: not a readable verdict ({exc})") from exc


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
