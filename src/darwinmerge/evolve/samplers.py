"""``OPTIMIZERS``: the search's optimizer names, each a factory of its Optuna sampler.

Torch-, NumPy- and Optuna-free at import: each factory imports Optuna (and the prior
CMA-ES sampler of :mod:`darwinmerge.evolve.optimizer`) when it is called, so that an
evolve config's ``optimizer.name`` is checked (``darwin validate``) without loading them.
:func:`darwinmerge.evolve.optimizer.make_sampler` is the entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from darwinmerge.registry import Registry

if TYPE_CHECKING:
    import optuna

    from darwinmerge.evolve.optimizer import SearchBox

__all__ = ["MULTI_OBJECTIVE", "OPTIMIZERS", "SamplerFactory"]

SamplerFactory = Callable[["SearchBox", int, dict[str, Any]], "optuna.samplers.BaseSampler"]

OPTIMIZERS: Registry[SamplerFactory] = Registry("optimizer")
MULTI_OBJECTIVE = {"nsga2"}


@OPTIMIZERS.register("cmaes")
def _cmaes(box: SearchBox, seed: int, options: dict[str, Any]) -> optuna.samplers.BaseSampler:
    from darwinmerge.evolve.optimizer import PriorCmaEsSampler

    return PriorCmaEsSampler(box, seed=seed, popsize=options.get("popsize"))


@OPTIMIZERS.register("random")
def _random(box: SearchBox, seed: int, options: dict[str, Any]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@OPTIMIZERS.register("tpe")
def _tpe(box: SearchBox, seed: int, options: dict[str, Any]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=options.get("startup", 10))


@OPTIMIZERS.register("nsga2")
def _nsga2(box: SearchBox, seed: int, options: dict[str, Any]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=options.get("popsize") or 8)
