"""evolve: genome spaces and priors, the ask/tell search, candidate workers, honest
selection."""

# --- search (config, optimizer, study, workers, runner, selection, api) ---
from darwinmerge.evolve.api import (
    EVOLUTION_FILE,
    EvolveResult,
    blind_box,
    check_evolve_config,
    evolve,
    run_evolution,
)
from darwinmerge.evolve.config import EvolveConfig, is_evolve_config, load_evolve_config
from darwinmerge.evolve.early_stop import EarlyStopRule
from darwinmerge.evolve.optimizer import OPTIMIZERS, PriorCmaEsSampler, SearchBox, make_sampler
from darwinmerge.evolve.runner import Objective, TrialEvent, run_search
from darwinmerge.evolve.select import Selection, honest_selection
from darwinmerge.evolve.workers import (
    CandidateRequest,
    CandidateResult,
    CandidateWorker,
    InProcessPool,
    RayPool,
    WorkerSpec,
)

__all__ = [
    # search
    "EVOLUTION_FILE",
    "OPTIMIZERS",
    "CandidateRequest",
    "CandidateResult",
    "CandidateWorker",
    "EarlyStopRule",
    "EvolveConfig",
    "EvolveResult",
    "InProcessPool",
    "Objective",
    "PriorCmaEsSampler",
    "RayPool",
    "SearchBox",
    "Selection",
    "TrialEvent",
    "WorkerSpec",
    "blind_box",
    "check_evolve_config",
    "evolve",
    "honest_selection",
    "is_evolve_config",
    "load_evolve_config",
    "make_sampler",
    "run_evolution",
    "run_search",
]
