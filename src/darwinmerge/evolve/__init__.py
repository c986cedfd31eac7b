"""evolve: genome spaces and priors, the ask/tell search, candidate workers, honest
selection."""

# --- search (config, optimizer, study, workers, runner, selection, api) ---
from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (lazy_exports)
    from darwinmerge.evolve.api import (
        EVOLUTION_FILE,
        EvolveResult,
        blind_box,
        evolve,
        run_evolution,
    )
    from darwinmerge.evolve.check import check_evolve_config
    from darwinmerge.evolve.config import EvolveConfig, is_evolve_config, load_evolve_config
    from darwinmerge.evolve.early_stop import EarlyStopRule
    from darwinmerge.evolve.genes import SPACES, Gene, GenomeSpace, SpaceContext
    from darwinmerge.evolve.optimizer import OPTIMIZERS, PriorCmaEsSampler, SearchBox, make_sampler
    from darwinmerge.evolve.prior import (
        Prior,
        ScanEvidence,
        blind_prior,
        mri_prior,
        prior_from_scans,
        scan_evidence,
    )
    from darwinmerge.evolve.runner import Objective, TrialEvent, run_search
    from darwinmerge.evolve.select import Selection, honest_selection, rescore_winner
    from darwinmerge.evolve.space import SpaceConfig, build_space, parse_space_config
    from darwinmerge.evolve.space_layerwise import LayerwiseSpace, LayerwiseSpaceConfig
    from darwinmerge.evolve.space_mergekit import MergekitEvolveSpace, MergekitEvolveSpaceConfig
    from darwinmerge.evolve.space_seed import SeedSpace, SeedSpaceConfig
    from darwinmerge.evolve.space_trust import TrustedSpace, trusted_prior
    from darwinmerge.evolve.workers import (
        CandidateRequest,
        CandidateResult,
        CandidateWorker,
        InProcessPool,
        RayPool,
        WorkerSpec,
    )

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    # genome
    "SPACES",
    "Gene",
    "GenomeSpace",
    "LayerwiseSpace",
    "LayerwiseSpaceConfig",
    "MergekitEvolveSpace",
    "MergekitEvolveSpaceConfig",
    "Prior",
    "ScanEvidence",
    "SeedSpace",
    "SeedSpaceConfig",
    "SpaceConfig",
    "SpaceContext",
    "TrustedSpace",
    "blind_prior",
    "build_space",
    "mri_prior",
    "parse_space_config",
    "prior_from_scans",
    "scan_evidence",
    "trusted_prior",
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
    "rescore_winner",
    "run_evolution",
    "run_search",
]
