"""Helpers for the merge tests: write recipes, read outputs, run the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open


def write_recipe(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def read_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out


def logits_of(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.tensor([[1, 5, 9, 17, 33, 2, 64, 100, 3, 7]])


MERGEKIT_PYTHON = Path(__file__).resolve().parents[2] / ".venv-mergekit" / "bin" / "python"


def require_mergekit() -> None:
    """Fail without the mergekit reference venv (skip where DARWIN_SKIP_MERGEKIT=1)."""
    import os

    if not MERGEKIT_PYTHON.exists():
        if os.environ.get("DARWIN_SKIP_MERGEKIT") == "1":
            pytest.skip("DARWIN_SKIP_MERGEKIT=1")
        pytest.fail("mergekit reference venv missing: run `make mergekit-venv`")


def run_mergekit(root: Path, configs: dict[str, dict]) -> None:
    """Write each config to ``root/NAME.yaml`` and run mergekit itself on all of them in
    one process (tools/mergekit_run.py): outputs in ``root/mk-NAME`` (a failure in
    ``root/mk-NAME.error``)."""
    jobs = []
    for name, cfg in configs.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        jobs.append([str(root / f"{name}.yaml"), str(root / f"mk-{name}")])
    run_mergekit_jobs(root, jobs)


def run_mergekit_jobs(root: Path, jobs: list[list[str]]) -> None:
    """Run tools/mergekit_run.py on ``[config.yaml, out_dir]`` pairs, in ``root``."""
    import json
    import os
    import subprocess

    tool = Path(__file__).resolve().parents[2] / "tools" / "mergekit_run.py"
    (root / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run(
        [str(MERGEKIT_PYTHON), str(tool), str(root / "jobs.json")],
        check=True,
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
    )
