"""Optuna samplers for the search, one registry entry each (``OPTIMIZERS``, declared in
the Optuna-free :mod:`darwinmerge.evolve.samplers` and re-exported here).

* ``cmaes`` (default): :class:`PriorCmaEsSampler`, CMA-ES whose initial distribution is
  the genome prior: mean ``prior.mean``, per-gene step sizes ``prior.sigma`` (as the
  initial covariance ``diag((sigma_i / sigma0)^2)`` with ``sigma0 = max_i sigma_i``),
  box ``[prior.lower, prior.upper]``. Optuna's own ``x0`` / ``sigma0`` arguments are
  deprecated since 4.9, so the sampler overrides only the step that builds the first
  CMA object; from the first ``tell`` on, Optuna pickles the CMA state into the trials'
  system attributes, so a resumed run (a new process, the same storage) continues the
  same distribution. Stopped (pruned) candidates are told with the fitness they
  reached.
* ``random``: uniform in the prior's box. ``tpe``: Optuna's TPE in the box. ``nsga2``:
  NSGA-II for two objectives.

Whatever the optimizer, the prior mean is enqueued as the first trial unless
``optimizer.start_first`` is false (:func:`darwinmerge.evolve.api.run_evolution`).

Every gene is one ``FloatDistribution(lower_i, upper_i)`` parameter named after it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import CmaEsSampler

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.samplers import MULTI_OBJECTIVE, OPTIMIZERS

__all__ = [
    "MULTI_OBJECTIVE",
    "OPTIMIZERS",
    "SearchBox",
    "PriorCmaEsSampler",
    "make_sampler",
    "genome_from_params",
    "distributions",
]

_EPS = 1e-10


@dataclass(frozen=True)
class SearchBox:
    """Gene names and the prior in unit space: ``mean``, ``sigma``, ``lower``, ``upper``
    (one entry per gene)."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    sigma: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    @classmethod
    def from_prior(cls, names: Sequence[str], prior: Any) -> SearchBox:
        arrays = [np.asarray(getattr(prior, f), dtype=float) for f in ("mean", "sigma")]
        lo = np.asarray(prior.lower, dtype=float)
        hi = np.asarray(prior.upper, dtype=float)
        box = cls(
            tuple(names),
            tuple(map(float, arrays[0])),
            tuple(map(float, arrays[1])),
            tuple(map(float, lo)),
            tuple(map(float, hi)),
        )
        box.check()
        return box

    def check(self) -> None:
        d = len(self.names)
        if len(set(self.names)) != d:
            raise ConfigError("genome: gene names must be unique")
        for field in ("mean", "sigma", "lower", "upper"):
            if len(getattr(self, field)) != d:
                raise ConfigError(
                    f"prior.{field}: {len(getattr(self, field))} values for {d} genes"
                )
        for i, name in enumerate(self.names):
            lo, hi, m, s = self.lower[i], self.upper[i], self.mean[i], self.sigma[i]
            if not 0.0 <= lo < hi <= 1.0:
                raise ConfigError(f"prior: gene {name!r} box [{lo}, {hi}] is not inside [0, 1]")
            if not lo <= m <= hi:
                raise ConfigError(f"prior: gene {name!r} mean {m} is outside its box [{lo}, {hi}]")
            if not s > 0:
                raise ConfigError(f"prior: gene {name!r} sigma must be > 0, got {s}")

    def narrowed(self, bounds: dict[str, tuple[float, float]]) -> SearchBox:
        """The box intersected with ``bounds`` (gene -> [low, high]); the mean is clipped
        into the new box. An unknown gene or an empty intersection is a ConfigError."""
        unknown = sorted(set(bounds) - set(self.names))
        if unknown:
            raise ConfigError(
                f"bounds: unknown gene {unknown[0]!r}; genes: {', '.join(self.names)}"
            )
        lower, upper, mean = list(self.lower), list(self.upper), list(self.mean)
        for i, name in enumerate(self.names):
            if name in bounds:
                lo, hi = bounds[name]
                lower[i], upper[i] = max(lower[i], lo), min(upper[i], hi)
                if not lower[i] < upper[i]:
                    raise ConfigError(
                        f"bounds.{name}: [{lo}, {hi}] does not meet the prior's box "
                        f"[{self.lower[i]}, {self.upper[i]}]"
                    )
                mean[i] = min(max(mean[i], lower[i]), upper[i])
        box = SearchBox(self.names, tuple(mean), self.sigma, tuple(lower), tuple(upper))
        box.check()
        return box

    def including(self, point: Sequence[float]) -> SearchBox:
        """The smallest box holding this one and ``point`` (unit space): what the search
        may reach grows to ``point``; the mean and the step sizes stay."""
        p = [float(v) for v in point]
        if len(p) != len(self.names):
            raise ConfigError(f"genome: a point has {len(p)} genes, the box {len(self.names)}")
        lower = tuple(min(lo, v) for lo, v in zip(self.lower, p, strict=True))
        upper = tuple(max(hi, v) for hi, v in zip(self.upper, p, strict=True))
        box = SearchBox(self.names, self.mean, self.sigma, lower, upper)
        box.check()
        return box

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "mean": list(self.mean),
            "sigma": list(self.sigma),
            "lower": list(self.lower),
            "upper": list(self.upper),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchBox:
        return cls(*(tuple(data[k]) for k in ("names", "mean", "sigma", "lower", "upper")))


def distributions(box: SearchBox) -> dict[str, BaseDistribution]:
    return {
        n: FloatDistribution(lo, hi)
        for n, lo, hi in zip(box.names, box.lower, box.upper, strict=True)
    }


def genome_from_params(box: SearchBox, params: dict[str, float]) -> list[float]:
    """The unit-space genome of a trial's parameters, in gene order."""
    return [float(params[n]) for n in box.names]


class PriorCmaEsSampler(CmaEsSampler):
    """CMA-ES started from a prior (see the module docstring)."""

    def __init__(
        self,
        box: SearchBox,
        *,
        seed: int | None = None,
        popsize: int | None = None,
    ) -> None:
        with warnings.catch_warnings():  # consider_pruned_trials is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(
                seed=seed,
                popsize=popsize,
                n_startup_trials=0,
                consider_pruned_trials=True,
                warn_independent_sampling=False,
            )
        self._box = box

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        """The gene box, known from the start: even the first trials come from CMA-ES
        (Optuna's default infers the space from finished trials and samples the first
        ones independently)."""
        return dict(distributions(self._box))

    def _init_optimizer(self, trans: Any, direction: Any) -> Any:
        import cmaes

        # the transform maps each parameter's box to [0, 1], in its own parameter order
        names = list(trans._search_space)
        index = {n: i for i, n in enumerate(self._box.names)}
        mean = trans.transform({n: self._box.mean[index[n]] for n in names})
        width = np.array([self._box.upper[index[n]] - self._box.lower[index[n]] for n in names])
        steps = np.array([self._box.sigma[index[n]] for n in names]) / width
        sigma0 = max(float(steps.max()), _EPS)
        cov = np.diag((steps / sigma0) ** 2)
        dim = len(names)
        return cmaes.CMA(
            mean=mean,
            sigma=sigma0,
            cov=cov,
            bounds=trans.bounds,
            seed=self._cma_rng.rng.randint(1, 2**31 - 2),
            n_max_resampling=10 * dim,
            population_size=self._popsize,
            lr_adapt=self._lr_adapt,
        )


def make_sampler(
    name: str, box: SearchBox, *, seed: int, options: dict[str, Any] | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name`` over ``box``."""
    return OPTIMIZERS.get(name)(box, seed, dict(options or {}))
