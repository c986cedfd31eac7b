"""``RunConfig``: one YAML file for the whole pipeline (``darwin run``).

A run config names two parents (the first is the father: the paired tests' reference),
an optional base, the task spec(s) and the probe sets, and then one section per phase:
``mri`` (the options of :class:`~darwinmerge.mri.MriConfig`), ``prior`` (its target
category), ``evolve`` (the search part of :class:`~darwinmerge.evolve.EvolveConfig`:
space, optimizer, trials, fitness, early stop, workers, backend, select, bounds,
storage), ``health`` (the margins of :class:`~darwinmerge.health.HealthOptions` and
``repair``) and ``final`` (the test-split scoring). Every section is checked when the
file is parsed, all problems in one line; nothing is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.config import RUN_OWNED_KEYS, EvolveConfig, EvolveSection
from darwinmerge.health.options import HealthOptions
from darwinmerge.mri.config import MriConfig

__all__ = [
    "FinalConfig",
    "check_run_config",
    "HealthSection",
    "PriorSection",
    "RunConfig",
    "is_run_config",
    "load_run_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriorSection(_Frozen):
    """``mri``: the search starts from the MRI prior of Phase 0's scans (toward
    ``target``, a probe category); ``blind``: mean 0.5, sigma 1/6 (the peers' start)."""

    kind: Literal["mri", "blind"] = "mri"
    target: str | None = None
    trust: Literal["fixed", "gene"] = "fixed"
    """``gene``: the MRI-trust gene (docs/evolve.md, "Guidance that cannot trap")."""


class HealthSection(_Frozen):
    """Phase 3. ``options``: :class:`~darwinmerge.health.HealthOptions` (margins,
    prescription steps). ``repair``: apply the prescription, re-merge in memory and keep
    it only when the fitness split does not drop."""

    enabled: bool = True
    repair: bool = False
    options: HealthOptions = HealthOptions()


class FinalConfig(_Frozen):
    """The final table: father, mother and child on the test split (the search never
    read it), 95% intervals and exact paired tests at ``alpha``."""

    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    batch_size: int = Field(default=32, ge=1)
    vs_start: bool = True
    """Also score the search's own start (the prior's recipe, merged with no search) and
    compare the child with it: did the search add anything on held-out items?"""


#: Where the prior's scans lie before the run folder is known (checking a config).
_SCANS_PLACEHOLDER = "<run>/mri"


class RunConfig(_Frozen):
    parents: dict[str, str] = Field(min_length=2, max_length=2)
    """name -> model folder; the first is the father."""
    base: str | None = None
    tasks: str | list[str]
    """A task spec, or a list of specs whose items are pooled."""
    test_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    probes: list[str] = Field(default_factory=lambda: ["builtin"], min_length=1)
    mri: MriConfig = MriConfig()
    """The options of Phase 0 (its ``probes`` are the top-level ``probes``)."""
    prior: PriorSection = PriorSection()
    evolve: EvolveSection
    health: HealthSection = HealthSection()
    final: FinalConfig = FinalConfig()
    report: bool = True

    @field_validator("mri", mode="before")
    @classmethod
    def _mri(cls, v: Any) -> Any:
        if isinstance(v, Mapping) and "probes" in v:
            raise ValueError("probes: give them at the top level (`probes:`), not under mri")
        return v

    @field_validator("evolve", mode="before")
    @classmethod
    def _evolve(cls, v: Any) -> Any:
        owned = sorted(k for k in v if k in RUN_OWNED_KEYS) if isinstance(v, Mapping) else []
        if owned:
            raise ValueError(
                f"{', '.join(owned)}: set by the run itself; give them at the top level "
                "(prior: under `prior:`)"
            )
        return v

    @model_validator(mode="after")
    def _whole(self) -> RunConfig:
        """The evolve section and the run's own fields must make a valid EvolveConfig
        (e.g. the trust gene needs the mri prior); the one line names ``evolve``."""
        from pydantic import ValidationError

        from darwinmerge.config.errors import format_validation_error

        try:
            self.evolve_config(_SCANS_PLACEHOLDER)
        except ValidationError as exc:
            raise ValueError(f"evolve: {format_validation_error(exc, EvolveConfig)}") from None
        return self

    # --- derived configs -------------------------------------------------------------
    @property
    def father(self) -> str:
        return next(iter(self.parents))

    @property
    def mother(self) -> str:
        return list(self.parents)[1]

    def evolve_config(self, scans: str | Path) -> EvolveConfig:
        """The :class:`~darwinmerge.evolve.EvolveConfig` of Phase 2: this config's evolve
        section (already validated, taken as is) with the run's parents, base, tasks,
        test fraction and prior (its scans: ``scans``); the child is always written
        (Phase 3 reads it). Paths are resolved by :func:`load_run_config`."""
        prior: dict[str, Any] = {"kind": self.prior.kind}
        if self.prior.kind == "mri":
            prior.update(scans=str(scans), target=self.prior.target, trust=self.prior.trust)
        section = {name: getattr(self.evolve, name) for name in EvolveSection.model_fields}
        section["select"] = self.evolve.select.model_copy(update={"write_child": True})
        return EvolveConfig.model_validate(
            {
                **section,
                "parents": dict(self.parents),
                "base": self.base,
                "tasks": self.tasks,
                "test_fraction": self.test_fraction,
                "prior": prior,
            }
        )

    def mri_config(self) -> MriConfig:
        """Phase 0's options, with the run's probes."""
        return self.mri.model_copy(update={"probes": tuple(self.probes)})

    def health_options(self) -> HealthOptions:
        return self.health.options

    def ledger_data(self) -> dict[str, Any]:
        """The config as the run folder's ledger keeps it (``run.json``): the run's own
        fields in full, and the ``mri``, ``evolve`` and ``health.options`` sections as
        written (the keys given, no defaults filled in), so a run folder made before the
        sections were typed resumes with the same config."""
        data = self.model_dump(mode="json")
        data["mri"] = self.mri.model_dump(mode="json", exclude_unset=True)
        data["evolve"] = self.evolve.model_dump(mode="json", exclude_unset=True)
        data["health"]["options"] = self.health.options.model_dump(mode="json", exclude_unset=True)
        return data

    def resolved(self, root: Path) -> RunConfig:
        """Parent / base / task / probe paths made absolute against ``root`` (the YAML's
        folder), the same way ``darwin evolve`` resolves its config."""
        ev = self.evolve_config(_SCANS_PLACEHOLDER).resolved(root)

        def fix_probe(spec: str) -> str:
            name, sep, arg = spec.partition("@")
            if sep and arg:
                path = Path(arg).expanduser()
                return f"{name}@{path if path.is_absolute() else (root / path).resolve()}"
            path = Path(spec).expanduser()
            if not path.is_absolute() and (root / path).exists():
                return str((root / path).resolve())
            return spec

        return self.model_copy(
            update={
                "parents": dict(ev.parents),
                "base": ev.base,
                "tasks": ev.tasks,
                "probes": [fix_probe(p) for p in self.probes],
            }
        )

    def check_paths(self) -> None:
        """Every parent (and the base) must be a model folder, and every parent needs its
        tokenizer files (each phase tokenizes with them): one line naming the first that
        is not."""
        from darwinmerge.checkpoint.tokenizer import has_tokenizer_files

        self.evolve_config(_SCANS_PLACEHOLDER).check_paths()
        for name, path in self.parents.items():
            if not has_tokenizer_files(path):
                raise ConfigError(
                    f"parents.{name}: {path} has no tokenizer files (tokenizer.json, "
                    "tokenizer_config.json ...); copy them from the model it was trained from"
                )


def is_run_config(data: Any) -> bool:
    """A run config has ``parents`` as a mapping and an ``evolve`` section."""
    return (
        isinstance(data, Mapping) and "evolve" in data and isinstance(data.get("parents"), Mapping)
    )


def load_run_config(
    path: str | Path, overrides: Sequence[str] = (), *, check_paths: bool = True
) -> RunConfig:
    """Parse, override (``key.sub=value``), validate and resolve a run YAML."""
    from darwinmerge.config.loader import load_config

    return load_config(path, RunConfig, overrides, check_paths=check_paths)


def check_run_config(config: RunConfig, *, build: bool = True) -> list[str]:
    """What ``darwin validate`` prints for a run config: the phases it will run and, with
    ``build``, the genome space and fitness items of Phase 2 (built from the parents'
    configs and the tasks; no model is loaded; the MRI prior needs Phase 0's scans, so
    the space is shown with its blind start here)."""
    from darwinmerge.evolve.check import check_evolve_config

    ev = config.evolve_config(_SCANS_PLACEHOLDER)
    health = "off"
    if config.health.enabled:
        health = "on, repair on the fitness split" if config.health.repair else "on"
    lines = [
        f"ok: run config: father {config.father!r} ({config.parents[config.father]}), "
        f"mother {config.mother!r} ({config.parents[config.mother]})"
        + (", with a base" if config.base else ""),
        f"  Phase 0 MRI: probes {', '.join(config.probes)}",
        f"  Phase 1 prior: {config.prior.kind}"
        + (f" toward {config.prior.target}" if config.prior.target else ""),
        f"  Phase 2 evolve: {ev.optimizer.name}, {ev.trials} candidates, "
        f"{ev.workers.n} worker(s), backend {ev.backend.name} on {ev.backend.device}",
        f"  Phase 3 health: {health}",
        f"  final: father, mother, child on the test split of {config.tasks}",
    ]
    if build:
        if config.prior.target is not None:
            from darwinmerge.mri.probes import resolve_probes

            cats = list(resolve_probes(config.probes).categories)
            if config.prior.target.upper() not in [c.upper() for c in cats]:
                raise ConfigError(
                    f"prior.target: {config.prior.target!r} is not a probe category "
                    f"({', '.join(cats)})"
                )
        blind = ev.model_copy(update={"prior": ev.prior.model_copy(update={"kind": "blind"})})
        checked = check_evolve_config(blind, build=True)
        if config.prior.kind == "mri":  # the genes' start comes from Phase 0's scans
            checked = [
                line.replace("prior blind", "prior computed after Phase 0")
                for line in checked
                if not line.startswith("  ")
            ] + [f"  genes: {', '.join(_gene_names(checked))} (start, steps, box: Phase 1)"]
        lines += ["  " + line for line in checked]
    return lines


def _gene_names(lines: list[str]) -> list[str]:
    return [line.strip().split(":")[0] for line in lines if line.startswith("  ")]
