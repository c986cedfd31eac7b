"""Genes, the genome-space base class, the space context and the space registry.

A genome is a vector ``x`` in ``[0, 1]^d``. Each coordinate is one :class:`Gene`, which
maps its unit value ``u`` to a value in the gene's own range:

* ``real``: ``low + u (high - low)``;
* ``int``: ``floor(low + u (high - low) + 1/2)`` (nearest integer, halves up), clamped
  to ``[low, high]``;
* ``choice``: option ``min(floor(u n), n - 1)`` of ``n`` options (equal bins in order).

A :class:`GenomeSpace` decodes the gene values into a validated
:class:`~darwinmerge.merge.Recipe` (docs/evolve.md, "Codec", gives every formula).
Values outside ``[0, 1]`` are clipped to the nearest edge before decoding (so a sample
of an unbounded optimizer decodes to the edge of the box); NaN or a wrong length is a
:class:`~darwinmerge.errors.ConfigError`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from darwinmerge.errors import ConfigError
from darwinmerge.merge.recipe import Recipe
from darwinmerge.registry import Registry

if TYPE_CHECKING:  # numpy loads when a genome is decoded, not when a config is checked
    import numpy as np

__all__ = [
    "Gene",
    "GeneValue",
    "GenomeSpace",
    "PriorRule",
    "SPACES",
    "SpaceContext",
    "SpaceFactory",
    "SpaceKind",
    "genome_space",
]

GeneValue = float | int | str


@dataclass(frozen=True)
class Gene:
    """One coordinate of the genome: unit value ``u`` in [0, 1] -> a value (module doc)."""

    name: str
    low: float = 0.0
    high: float = 1.0
    kind: Literal["real", "int", "choice"] = "real"
    choices: tuple[str, ...] = ()
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind == "choice" and len(self.choices) < 2:
            raise ValueError(f"gene {self.name}: a choice gene needs at least 2 choices")
        if self.kind != "choice" and not self.high >= self.low:
            raise ValueError(f"gene {self.name}: high {self.high} < low {self.low}")

    def value(self, u: float) -> GeneValue:
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == "choice":
            n = len(self.choices)
            return self.choices[min(int(u * n), n - 1)]
        x = self.low + u * (self.high - self.low)
        if self.kind == "int":
            return int(min(max(math.floor(x + 0.5), math.ceil(self.low)), math.floor(self.high)))
        return x

    def unit(self, value: GeneValue) -> float:
        """Inverse of :meth:`value` (the centre of the bin for int and choice genes)."""
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(f"gene {self.name}: {value!r} is not one of {self.choices}")
            return (self.choices.index(str(value)) + 0.5) / len(self.choices)
        if isinstance(value, str):
            raise ConfigError(f"gene {self.name}: expected a number, got {value!r}")
        span = self.high - self.low
        if span == 0:
            return 0.5
        u = (float(value) - self.low) / span
        if not -1e-9 <= u <= 1 + 1e-9:
            raise ConfigError(
                f"gene {self.name}: {value} is outside its range [{self.low}, {self.high}]"
            )
        return min(max(u, 0.0), 1.0)


@dataclass(frozen=True)
class SpaceContext:
    """What a space needs to know about the parents (built once per run).

    ``parent_names`` / ``parent_paths`` in recipe order (the first is parent A, the
    ``t = 0`` end; the second B, ``t = 1``); ``sparse_layers`` are the MoE layers;
    ``scans`` maps a parent name to a saved MRI scan of it (a ``scan_*.json`` file or a
    folder) or to its dead experts inline (``{layer: [expert, ...]}``), used by the
    revival gene (the recipe's ``revive.scan`` / ``revive.donor_scan``).
    """

    parent_names: tuple[str, ...]
    parent_paths: tuple[str, ...]
    num_layers: int
    base_path: str | None = None
    sparse_layers: tuple[int, ...] = ()
    num_experts: int = 0
    donor: str | None = None
    scans: Mapping[str, str | dict[int, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.parent_names) != len(self.parent_paths) or not self.parent_names:
            raise ConfigError("space context: give one path per parent name (at least one)")
        if self.num_layers < 1:
            raise ConfigError(f"space context: num_layers must be >= 1, got {self.num_layers}")
        if self.donor is not None and self.donor not in self.parent_names:
            raise ConfigError(f"space context: donor {self.donor!r} is not a parent")
        for name in self.scans:
            if name not in self.parent_names:
                raise ConfigError(f"space context: a scan is given for {name!r}, not a parent")

    @classmethod
    def from_parents(
        cls,
        parents: Mapping[str, str | Path] | Sequence[tuple[str, str | Path]],
        *,
        base: str | Path | None = None,
        donor: str | None = None,
        scans: Mapping[str, str | Path | dict[int, list[int]]] | None = None,
    ) -> SpaceContext:
        """Read layer and expert counts from the first parent's checkpoint."""
        from darwinmerge.checkpoint import CheckpointReader
        from darwinmerge.merge.planner import arch_of

        items = list(parents.items()) if isinstance(parents, Mapping) else list(parents)
        if not items:
            raise ConfigError("space context: no parents given")
        with CheckpointReader(str(items[0][1])) as reader:
            arch = arch_of(reader)
        sparse = tuple(i for i, kind in enumerate(arch.mlp_types()) if kind == "moe")
        return cls(
            parent_names=tuple(str(n) for n, _ in items),
            parent_paths=tuple(str(p) for _, p in items),
            num_layers=arch.num_layers,
            base_path=str(base) if base is not None else None,
            sparse_layers=sparse,
            num_experts=arch.num_experts or 0,
            donor=donor,
            scans={k: v if isinstance(v, dict) else str(v) for k, v in (scans or {}).items()},
        )

    def require_pair(self, space: str) -> tuple[str, str]:
        if len(self.parent_names) != 2:
            raise ConfigError(
                f"space {space}: merges exactly two parents, got {len(self.parent_names)} "
                f"({', '.join(self.parent_names)})"
            )
        return self.parent_names[0], self.parent_names[1]


class GenomeSpace(ABC):
    """A genome layout and its codec to a Recipe; subclasses define ``recipe_from``."""

    name: str = ""

    def __init__(self, genes: Sequence[Gene], ctx: SpaceContext) -> None:
        names = [g.name for g in genes]
        if len(set(names)) != len(names):
            raise ValueError(f"space {self.name}: duplicate gene names")
        self.genes: tuple[Gene, ...] = tuple(genes)
        self.ctx = ctx

    @property
    def dim(self) -> int:
        return len(self.genes)

    @property
    def gene_names(self) -> list[str]:
        return [g.name for g in self.genes]

    def _unit(self, x: Sequence[float]) -> np.ndarray:
        import numpy as np

        arr = np.asarray(x, dtype=float).reshape(-1)
        if arr.shape[0] != self.dim:
            raise ConfigError(
                f"space {self.name}: a genome has {self.dim} genes, got {arr.shape[0]}"
            )
        if not np.isfinite(arr).all():
            raise ConfigError(f"space {self.name}: the genome holds NaN or infinite values")
        return np.clip(arr, 0.0, 1.0)

    def values(self, x: Sequence[float]) -> dict[str, GeneValue]:
        """Gene name -> decoded gene value."""
        u = self._unit(x)
        return {g.name: g.value(float(v)) for g, v in zip(self.genes, u, strict=True)}

    def decode(self, x: Sequence[float]) -> Recipe:
        """The validated Recipe of genome ``x``."""
        return self.recipe_from(self.values(x))

    def encode(self, values: Mapping[str, GeneValue]) -> np.ndarray:
        """Unit genome of the given gene values (every gene must be given)."""
        missing = [g.name for g in self.genes if g.name not in values]
        unknown = sorted(set(values) - set(self.gene_names))
        if missing or unknown:
            raise ConfigError(
                f"space {self.name}: encode needs every gene; missing {missing}, unknown {unknown}"
            )
        import numpy as np

        return np.array([g.unit(values[g.name]) for g in self.genes])

    def describe(self, x: Sequence[float]) -> dict[str, float | str]:
        """Human-readable decoded values (plus a space's own summary lines)."""
        vals = self.values(x)
        out: dict[str, float | str] = {
            k: (v if isinstance(v, str) else float(v)) for k, v in vals.items()
        }
        out.update(self.summary(vals))
        return out

    def summary(self, values: Mapping[str, GeneValue]) -> dict[str, float | str]:
        return {}

    def blind_mean(self) -> np.ndarray:
        """Start of a search without scans (0.5 everywhere unless a space says otherwise)."""
        import numpy as np

        return np.full(self.dim, 0.5)

    @abstractmethod
    def recipe_from(self, values: Mapping[str, GeneValue]) -> Recipe: ...

    def _parse(self, data: dict[str, Any]) -> Recipe:
        if self.ctx.donor is not None:
            data.setdefault("donor", self.ctx.donor)
        return Recipe.parse(data, source=f"genome space {self.name}")


#: ``factory(config, ctx) -> GenomeSpace``; one per ``SpaceConfig.kind``.
SpaceFactory = Callable[[Any, SpaceContext], GenomeSpace]

#: ``rule(space, evidence, builder)``: a space's MRI prior (``evolve/prior_rules.py``).
PriorRule = Callable[[Any, Any, Any], None]


@dataclass(frozen=True)
class SpaceKind:
    """One kind of genome space, registered in one place by :func:`genome_space`: its
    config model (a pydantic model whose ``kind`` is ``Literal[name]``), its factory and
    the rule of its MRI prior, as ``"module:function"`` (imported on first use: the rules
    need numpy, the config models do not)."""

    name: str
    config: type[Any]
    build: SpaceFactory
    prior_rule: str

    @property
    def prior(self) -> PriorRule:
        """The prior rule, imported."""
        import importlib

        module, _, function = self.prior_rule.partition(":")
        rule: PriorRule = getattr(importlib.import_module(module), function)
        return rule


#: The genome space kinds; each module registers its own with :func:`genome_space`.
SPACES: Registry[SpaceKind] = Registry(
    "genome space",
    plugins={
        "seed": "darwinmerge.evolve.space_seed",
        "layerwise": "darwinmerge.evolve.space_layerwise",
        "mergekit_evolve": "darwinmerge.evolve.space_mergekit",
    },
)


def genome_space(
    name: str, *, config: type[Any], prior: str
) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator of a space's factory: registers the kind ``name`` in :data:`SPACES`
    with its config model and its prior rule (``"module:function"``)."""

    def decorator(build: SpaceFactory) -> SpaceFactory:
        SPACES.register(name)(SpaceKind(name, config, build, prior))
        return build

    return decorator
