"""A micro zoo (trained for a few steps, seconds to build) shared by the run tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="session")
def micro_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from darwinmerge.zoo.build import build_zoo, micro_config

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run-zoo") / "zoo"
    build_zoo(out, micro_config())
    return out


def run_config_data(zoo: Path, **evolve: Any) -> dict[str, Any]:
    """A small run config over the micro zoo (blind-free: the MRI prior is used)."""
    ev: dict[str, Any] = {
        "space": {"kind": "seed", "max_blocks": 2, "revive": "off"},
        "optimizer": {"name": "cmaes", "seed": 0, "popsize": 4},
        "trials": 3,
        "fitness": {"subset": 4, "chunk_size": 8},
        "early_stop": {"enabled": False},
        "backend": {"batch_size": 8, "max_new_tokens": 8},
        "select": {"top_k": 1},
    }
    ev.update(evolve)
    return {
        "parents": {"father": str(zoo / "father"), "mother": str(zoo / "mother")},
        "base": str(zoo / "base"),
        "tasks": f"zoo:{zoo}",
        "probes": [f"zoo@{zoo}"],
        "mri": {"max_length": 64, "batch_size": 8, "bootstrap_resamples": 20},
        "prior": {"kind": "mri", "target": "reasoning"},
        "evolve": ev,
        "health": {"enabled": True, "repair": False},
        "final": {"batch_size": 16},
        "report": False,
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
