"""evolve: genome spaces and priors, the ask/tell search, candidate workers, honest
selection."""

# --- search (config, optimizer, study, workers, runner, selection, api) ---
from typing import TYPE_CHECKING

from darwinmerge.lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (_EXPORTS below)
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
    from darwinmerge.evolve.genes import (
        SPACES,
        Gene,
        GenomeSpace,
        SpaceContext,
        SpaceKind,
        genome_space,
    )
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

#: export -> the module that defines it, imported on first use (tests/test_lazy.py
#: checks this table against the imports above and against the modules)
_EXPORTS = {
    "EVOLUTION_FILE": "darwinmerge.evolve.api",
    "EvolveResult": "darwinmerge.evolve.api",
    "blind_box": "darwinmerge.evolve.api",
    "evolve": "darwinmerge.evolve.api",
    "run_evolution": "darwinmerge.evolve.api",
    "check_evolve_config": "darwinmerge.evolve.check",
    "EvolveConfig": "darwinmerge.evolve.config",
    "is_evolve_config": "darwinmerge.evolve.config",
    "load_evolve_config": "darwinmerge.evolve.config",
    "EarlyStopRule": "darwinmerge.evolve.early_stop",
    "SPACES": "darwinmerge.evolve.genes",
    "Gene": "darwinmerge.evolve.genes",
    "GenomeSpace": "darwinmerge.evolve.genes",
    "SpaceContext": "darwinmerge.evolve.genes",
    "SpaceKind": "darwinmerge.evolve.genes",
    "genome_space": "darwinmerge.evolve.genes",
    "OPTIMIZERS": "darwinmerge.evolve.optimizer",
    "PriorCmaEsSampler": "darwinmerge.evolve.optimizer",
    "SearchBox": "darwinmerge.evolve.optimizer",
    "make_sampler": "darwinmerge.evolve.optimizer",
    "Prior": "darwinmerge.evolve.prior",
    "ScanEvidence": "darwinmerge.evolve.prior",
    "blind_prior": "darwinmerge.evolve.prior",
    "mri_prior": "darwinmerge.evolve.prior",
    "prior_from_scans": "darwinmerge.evolve.prior",
    "scan_evidence": "darwinmerge.evolve.prior",
    "Objective": "darwinmerge.evolve.runner",
    "TrialEvent": "darwinmerge.evolve.runner",
    "run_search": "darwinmerge.evolve.runner",
    "Selection": "darwinmerge.evolve.select",
    "honest_selection": "darwinmerge.evolve.select",
    "rescore_winner": "darwinmerge.evolve.select",
    "SpaceConfig": "darwinmerge.evolve.space",
    "build_space": "darwinmerge.evolve.space",
    "parse_space_config": "darwinmerge.evolve.space",
    "LayerwiseSpace": "darwinmerge.evolve.space_layerwise",
    "LayerwiseSpaceConfig": "darwinmerge.evolve.space_layerwise",
    "MergekitEvolveSpace": "darwinmerge.evolve.space_mergekit",
    "MergekitEvolveSpaceConfig": "darwinmerge.evolve.space_mergekit",
    "SeedSpace": "darwinmerge.evolve.space_seed",
    "SeedSpaceConfig": "darwinmerge.evolve.space_seed",
    "TrustedSpace": "darwinmerge.evolve.space_trust",
    "trusted_prior": "darwinmerge.evolve.space_trust",
    "CandidateRequest": "darwinmerge.evolve.workers",
    "CandidateResult": "darwinmerge.evolve.workers",
    "CandidateWorker": "darwinmerge.evolve.workers",
    "InProcessPool": "darwinmerge.evolve.workers",
    "RayPool": "darwinmerge.evolve.workers",
    "WorkerSpec": "darwinmerge.evolve.workers",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    # genome
    "SPACES",
    "SpaceKind",
    "genome_space",
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
