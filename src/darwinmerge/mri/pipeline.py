"""End-to-end MRI runs on model folders: load, tokenise probes, scan, compare, save.

The CLI (``darwin mri``) is a thin layer over :func:`scan_model` and :func:`compare_models`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from darwinmerge.dtypes import torch_dtype
from darwinmerge.errors import CheckpointError
from darwinmerge.mri.compare import (
    SWAP_PARTS,
    ComparisonScan,
    SwapResult,
    compare_scans,
    swap_chunks,
    swap_scan,
)
from darwinmerge.mri.config import MriConfig
from darwinmerge.mri.probes import ProbeBatches, resolve_probes, tokenize_probes
from darwinmerge.mri.scan import Scan, run_scan
from darwinmerge.mri.weights import WeightScan, weight_scan

__all__ = [
    "MriConfig",
    "MriComparison",
    "ProgressFactory",
    "compare_models",
    "load_model",
    "scan_model",
]

#: ``factory(description, total)`` returns a callback advanced by completed steps.
ProgressFactory = Callable[[str, int], Callable[[int], None]]

#: MriConfig.dtype (a name, checked without torch) -> the torch dtype the model loads in


def load_model(path: str | Path, cfg: MriConfig) -> tuple[torch.nn.Module, Any]:
    """A model folder -> (eval-mode model on ``cfg.device``, tokenizer)."""
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{p}: no config.json; give a Hugging Face model folder")
    from darwinmerge.checkpoint.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(p, cfg.tokenizer)  # before the weights: fail fast
    try:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch_dtype(cfg.dtype))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: cannot load the model ({exc})") from exc
    module: torch.nn.Module = model
    return module.to(torch.device(cfg.device)).eval(), tokenizer


def _batches(tokenizer: Any, cfg: MriConfig) -> ProbeBatches:
    return tokenize_probes(
        resolve_probes(cfg.probes), tokenizer, max_length=cfg.max_length, batch_size=cfg.batch_size
    )


def _noop(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def scan_model(path: str | Path, cfg: MriConfig, progress: ProgressFactory | None = None) -> Scan:
    """Load the model at ``path`` and scan it on ``cfg.probes``."""
    progress = progress or _noop
    model, tok = load_model(path, cfg)
    pb = _batches(tok, cfg)
    return run_scan(
        model,
        pb,
        model_name=str(path),
        options=cfg.scan_options(),
        progress=progress(f"scan {Path(path).name}", len(pb)),
    )


@dataclass
class MriComparison:
    scan_a: Scan
    scan_b: Scan
    comparison: ComparisonScan
    weights: WeightScan

    def save(self, out_dir: str | Path) -> None:
        self.scan_a.save(out_dir, "scan_a")
        self.scan_b.save(out_dir, "scan_b")
        self.comparison.save(out_dir)
        self.weights.save(out_dir)


def compare_models(
    path_a: str | Path,
    path_b: str | Path,
    cfg: MriConfig,
    *,
    base: str | Path | None = None,
    progress: ProgressFactory | None = None,
) -> MriComparison:
    """Scan both parents on the same probes (tokenised with A's tokenizer), run the swap
    scan both ways (unless ``cfg.swap`` is off; at most ``cfg.swap_budget_mib`` of layer
    inputs kept at once) and the streamed weight-space scan."""
    progress = progress or _noop
    model_a, tok = load_model(path_a, cfg)
    model_b, _ = load_model(path_b, cfg)
    pb = _batches(tok, cfg)
    opts = cfg.scan_options()
    sa = run_scan(
        model_a,
        pb,
        model_name=str(path_a),
        options=opts,
        progress=progress(f"scan A {Path(path_a).name}", len(pb)),
    )
    sb = run_scan(
        model_b,
        pb,
        model_name=str(path_b),
        options=opts,
        progress=progress(f"scan B {Path(path_b).name}", len(pb)),
    )
    ab = ba = None
    if cfg.swap:

        def swap(x: torch.nn.Module, y: torch.nn.Module, label: str) -> SwapResult:
            steps = len(swap_chunks(x, pb, cfg.swap_budget_bytes)) * sa.num_layers
            return swap_scan(
                x,
                y,
                pb,
                parts=tuple(SWAP_PARTS) if cfg.swap_components else (),
                loss_tokens=cfg.loss,
                budget_bytes=cfg.swap_budget_bytes,
                progress=progress(label, steps),
            )

        ab = swap(model_a, model_b, "swap B's layers into A")
        ba = swap(model_b, model_a, "swap A's layers into B")
    del model_a, model_b
    from darwinmerge.checkpoint import CheckpointReader

    with CheckpointReader(path_a) as reader:
        n_tensors = len(reader)
    ws = weight_scan(path_a, path_b, base, progress=progress("weight-space scan", n_tensors))
    return MriComparison(sa, sb, compare_scans(sa, sb, ab, ba), ws)
