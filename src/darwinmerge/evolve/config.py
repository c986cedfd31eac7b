"""``EvolveConfig``: one YAML file per evolution run, ``key=value`` overrides.

Validated once at parse time with every problem reported at once (unknown keys, out of
range numbers, an unknown optimizer, a missing parent folder, a bad genome space).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from darwinmerge.dtypes import DTypeName
from darwinmerge.errors import ConfigError
from darwinmerge.merge.options import MergeOptions

__all__ = [
    "EvolveConfig",
    "EvolveSection",
    "RUN_OWNED_KEYS",
    "FitnessConfig",
    "OptimizerConfig",
    "EarlyStopConfig",
    "WorkersConfig",
    "SelectConfig",
    "BackendConfig",
    "PriorConfig",
    "load_evolve_config",
    "is_evolve_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimizerConfig(_Frozen):
    """``name``: cmaes | random | tpe | nsga2; ``popsize``: CMA-ES / NSGA-II population;
    ``start_first``: the prior's start (its mean genome) is the first trial, so that it is
    scored like any candidate, can be returned, and is the incumbent the paired race
    holds every later candidate to; ``anchor``: when the start is not the space's blind
    start (an MRI prior's), the blind start (``space.blind_mean()``, what a blind search
    of the space begins from: 0.5 on every ``seed`` gene, the 50/50 merge) is the second
    trial and the search box is widened to hold it, so that evidence that is confident
    and wrong cannot keep the search below the plain merge: the anchor can be returned,
    and where it ranks high CMA-ES moves its mean toward it. One evaluation of the
    budget."""

    name: str = "cmaes"
    seed: int = 0
    popsize: int | None = Field(default=None, ge=2)
    start_first: bool = True
    anchor: bool = True

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from darwinmerge.evolve.samplers import OPTIMIZERS

        if v not in OPTIMIZERS:
            raise ValueError(OPTIMIZERS.unknown_message(v))
        return v


class PriorConfig(_Frozen):
    """``blind``: mean 0.5, sigma 1/6 on every gene, full box. ``mri``: the prior GENOME
    derives from a ``darwin mri compare`` folder (``scans``) toward ``target``."""

    kind: Literal["blind", "mri"] = "blind"
    scans: str | None = None
    target: str | None = None
    trust: Literal["fixed", "gene"] = "fixed"
    """``fixed``: search the prior's box around its genome. ``gene``: add the
    ``mri_trust`` gene and search a free genome over the full box, blended with the
    prior's (``evolve/space_trust.py``): the scans cannot trap the search in a wrong box."""

    @model_validator(mode="after")
    def _needs_scans(self) -> PriorConfig:
        if self.kind == "mri" and not self.scans:
            raise ValueError("prior.scans: the mri prior needs a `darwin mri compare` folder")
        if self.trust == "gene" and self.kind != "mri":
            raise ValueError("prior.trust: the trust gene blends an mri prior; set kind: mri")
        return self


class FitnessConfig(_Frozen):
    """Fitness = mean score over ``categories`` (all when None) on a seeded stratified
    ``subset`` of the fitness split (an int: items per category; a float: a share).

    ``score``: ``accuracy`` (each item right or wrong by ``scorer``: generation and
    exact match, or multiple choice), or a continuous score from one forward pass per
    item, no generation: ``gold_margin`` (greedy exact match of the item's gold
    continuation read from its teacher-forced margin, smoothed: ``sigmoid(margin)``),
    ``gold_prob`` (the probability of the gold continuation) or ``gold_logprob`` (its
    log). ``auto`` (default): ``gold_margin`` when every fitness item carries a gold
    ``target`` (the zoo's do) and no ``keep`` objective is set, else ``accuracy``. On the
    merge-problem suite (benchmarks/search_suite.py, docs/evolve.md) ``gold_prob`` ranked
    the merges of two specialists against their test accuracy (Spearman -0.72: it pays
    more for making some items certain than for making many right), ``gold_margin``
    ranked them with it (+0.93), and it is as good elsewhere. The early-stop rule races
    continuous scores paired, item by item."""

    categories: list[str] | None = None
    keep: str | None = None
    """NSGA-II's second objective: accuracy on this category (e.g. multilingual)."""
    tolerance: float = Field(default=0.02, ge=0.0, le=1.0)
    """How far ``keep`` may fall below the father for a front member to be chosen."""
    subset: int | float = 1.0
    subset_seed: int = 0
    chunk_size: int = Field(default=16, ge=1)
    scorer: str = "auto"
    score: Literal["auto", "accuracy", "gold_margin", "gold_prob", "gold_logprob"] = "auto"

    @field_validator("subset")
    @classmethod
    def _subset(cls, v: int | float) -> int | float:
        if isinstance(v, bool) or (isinstance(v, int) and v < 1):
            raise ValueError(f"an int subset is items per category (>= 1), got {v}")
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError(f"a float subset is a share in (0, 1], got {v}")
        return v


class EarlyStopConfig(_Frozen):
    enabled: bool = True
    z: float = Field(default=1.96, gt=0.0, le=6.0)
    min_items: int = Field(default=4, ge=1)
    audit: bool = False
    """Score every item anyway and record where the rule would have stopped."""


class WorkersConfig(_Frozen):
    n: int = Field(default=1, ge=1, le=1024)
    ray_address: str | None = None
    threads: int = Field(default=1, ge=1)


class BackendConfig(_Frozen):
    name: Literal["transformers", "vllm", "sglang"] = "transformers"
    families: dict[str, Literal["transformers", "vllm", "sglang"]] = Field(default_factory=dict)
    """The engine per model family (``config.json``'s ``model_type``, a ``_text`` suffix
    optional), over ``name``:
    ``{qwen3_moe: vllm, qwen3_5_moe: transformers}``. Where vLLM cannot score a family on
    this machine, the worker says why in one line and scores with transformers."""
    device: str = "cpu"
    dtype: DTypeName = "float32"
    batch_size: int = Field(default=16, ge=1)
    max_new_tokens: int = Field(default=32, ge=1)
    engine_options: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the vLLM / SGLang engine (``{enforce_eager: true,
    max_model_len: 2048}``), given to its constructor as they are; unused by
    transformers. (Replaces the ``DARWIN_VLLM_OPTIONS`` / ``DARWIN_SGLANG_OPTIONS``
    environment variables, no longer read.)"""

    def engine_for(self, parent: str | Path) -> str:
        """The engine asked for the family of the model folder ``parent``."""
        if not self.families:
            return self.name
        import json

        try:
            config = json.loads((Path(parent) / "config.json").read_text())
        except (OSError, ValueError):
            return self.name
        text = config.get("text_config") or {}
        for model_type in (config.get("model_type"), text.get("model_type")):
            for name in (model_type, str(model_type).removesuffix("_text")):
                if name in self.families:
                    return self.families[name]
        return self.name


class SelectConfig(_Frozen):
    """``top_k`` candidates go to the test split. ``rescore_top`` (0: off): before the
    winner is chosen, that many best candidates by search fitness are scored again, with
    the search's own score, on fresh fitness-split items the search never used
    (``rescore_items``: per category, or a share of the unused items; ``rescore_seed``
    draws them), and the winner is the best on the pooled items. The test split is not
    read."""

    top_k: int = Field(default=3, ge=1)
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    write_child: bool = True
    rescore_top: int = Field(default=0, ge=0)
    rescore_items: int | float = 1.0
    rescore_seed: int = 1

    @field_validator("rescore_items")
    @classmethod
    def _rescore_items(cls, v: int | float) -> int | float:
        if isinstance(v, bool) or (isinstance(v, int) and v < 1):
            raise ValueError(f"an int rescore_items is items per category (>= 1), got {v}")
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError(f"a float rescore_items is a share in (0, 1], got {v}")
        return v


class EvolveSection(_Frozen):
    """The search part of an evolve config: what a run config's ``evolve:`` section holds
    (the run sets the parents, base, tasks, test fraction and prior itself)."""

    space: dict[str, Any]
    optimizer: OptimizerConfig = OptimizerConfig()
    trials: int = Field(default=40, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0.0)
    fitness: FitnessConfig = FitnessConfig()
    early_stop: EarlyStopConfig = EarlyStopConfig()
    workers: WorkersConfig = WorkersConfig()
    backend: BackendConfig = BackendConfig()
    select: SelectConfig = SelectConfig()
    options: MergeOptions = MergeOptions()
    """How candidates are merged and failures shown (never what they compute): merge
    kernels on / off by name, ``direct_reads``, ``debug`` (print a failed candidate's
    traceback); see :class:`~darwinmerge.merge.options.MergeOptions`."""
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Narrow the search box of named genes, in unit space: ``gene: [low, high]``."""
    storage: str | None = None
    """A database URL; default: the journal file RUN/study.journal."""

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        bad = [f"{g}: [{lo}, {hi}]" for g, (lo, hi) in v.items() if not 0.0 <= lo < hi <= 1.0]
        if bad:
            raise ValueError(f"each bound must satisfy 0 <= low < high <= 1 (unit space): {bad}")
        return v

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Any]) -> dict[str, Any]:
        """The genome space is a ``SpaceConfig`` (checked here, kept as data)."""
        from darwinmerge.evolve.space import SPACE_ADAPTER, SpaceConfig

        try:
            SPACE_ADAPTER.validate_python(v)
        except ValidationError as exc:
            from darwinmerge.config.errors import format_validation_error

            raise ValueError(format_validation_error(exc, SpaceConfig)) from None
        return v

    @model_validator(mode="after")
    def _cross(self) -> EvolveSection:
        problems: list[str] = []
        fit = self.fitness
        if fit.keep is not None and fit.score not in ("auto", "accuracy"):
            problems.append("fitness.keep: the second objective needs fitness.score=accuracy")
        if fit.keep is not None and self.optimizer.name != "nsga2":
            problems.append("fitness.keep: a second objective needs optimizer.name=nsga2")
        if self.early_stop.enabled and fit.keep is not None:
            problems.append("early_stop.enabled: not available with two objectives (fitness.keep)")
        if self.backend.name == "vllm" and self.workers.n > 1 and not self.backend.device:
            problems.append("backend.device: vllm workers need a cuda device")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class _Sources(_Frozen):
    """What an evolve config reads (:data:`RUN_OWNED_KEYS`: a run config sets them from
    its own fields)."""

    parents: dict[str, str] = Field(min_length=2)
    """name -> model folder; the first is the father (the paired tests' reference)."""
    base: str | None = None
    tasks: str | list[str] = "zoo"
    """A task spec, or a list of specs whose items are pooled (e.g. a GPQA-style JSONL and
    an lm-eval task)."""
    test_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    prior: PriorConfig = PriorConfig()

    @field_validator("parents")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        bad = [n for n in v if not re.fullmatch(r"[A-Za-z0-9_.-]+", n)]
        if bad:
            raise ValueError(f"parent names may use letters, digits, _ . - only: {bad}")
        return v


#: The keys of an evolve config that a run config sets from its own fields.
RUN_OWNED_KEYS = tuple(_Sources.model_fields)


class EvolveConfig(EvolveSection, _Sources):
    """One evolution run: the parents, tasks and prior (:data:`RUN_OWNED_KEYS`, first),
    then the search (:class:`EvolveSection`)."""

    @property
    def father(self) -> str:
        return next(iter(self.parents))

    def resolved(self, root: Path) -> EvolveConfig:
        """Relative parent / base / task / scan paths made absolute against ``root``."""

        def fix(p: str) -> str:
            path = Path(p).expanduser()
            return str(path if path.is_absolute() else (root / path).resolve())

        def fix_task(spec: str) -> str:
            name, sep, arg = spec.partition(":")
            if sep and arg and name in ("zoo", "jsonl") and not arg.lstrip("-").isdigit():
                return f"{name}:{fix(arg)}"
            if sep and name == "lmeval" and "@" in arg:  # lmeval:TASK@INCLUDE_PATH
                task, _, include = arg.partition("@")
                return f"lmeval:{task}@{fix(include)}"
            if not sep and name not in ("zoo",) and (root / spec).exists():
                return fix(spec)
            return spec

        tasks: str | list[str] = (
            fix_task(self.tasks)
            if isinstance(self.tasks, str)
            else [fix_task(t) for t in self.tasks]
        )
        prior = self.prior
        if prior.scans:
            prior = prior.model_copy(update={"scans": fix(prior.scans)})
        return self.model_copy(
            update={
                "parents": {n: fix(p) for n, p in self.parents.items()},
                "base": fix(self.base) if self.base else None,
                "tasks": tasks,
                "prior": prior,
            }
        )

    def _in_a_zoo(self, path: Path) -> bool:
        """``path`` lies in a demo zoo: one this config reads tasks from (``zoo:DIR``),
        or a folder with a ``zoo.json``."""
        specs = [self.tasks] if isinstance(self.tasks, str) else self.tasks
        zoos = [Path(s.partition(":")[2]) for s in specs if s.startswith("zoo:")]
        if (path.parent / "zoo.json").is_file():
            return True
        return any(path.resolve().is_relative_to(z.resolve()) for z in zoos)

    def check_paths(self) -> None:
        """Every parent (and the base) must be a model folder: one line naming the first
        that is not, and the fix that fits (build the zoo for a zoo path)."""
        keys = [(f"parents.{n}", p) for n, p in self.parents.items()]
        for key, path in [*keys, *([("base", self.base)] if self.base else [])]:
            if not (Path(path) / "config.json").is_file():
                fix = (
                    "build the zoo with `darwin zoo build` or fix the path"
                    if self._in_a_zoo(Path(path))
                    else "fix the path, or check the config away from its models with "
                    "`darwin validate CONFIG --no-check-parents`"
                )
                raise ConfigError(f"{key}: {path} is not a model folder (no config.json); {fix}")


def is_evolve_config(data: Any) -> bool:
    """An evolve config has ``parents`` as a mapping and a ``space`` (a recipe lists its
    parents and has no ``space``)."""
    return (
        isinstance(data, Mapping) and "space" in data and isinstance(data.get("parents"), Mapping)
    )


def load_evolve_config(
    path: str | Path, overrides: Sequence[str] = (), *, check_paths: bool = True
) -> EvolveConfig:
    """Parse, override (``key.sub=value``), validate and resolve an evolve YAML."""
    from darwinmerge.config.loader import load_config

    return load_config(path, EvolveConfig, overrides, check_paths=check_paths)
