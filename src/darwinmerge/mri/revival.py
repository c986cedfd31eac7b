"""Reads a saved MRI scan as dead experts for the merge's ``revive:`` recipe field.

Registers the reader ``"mri"`` in :data:`darwinmerge.merge.revive.SCAN_READERS` (the
merge layer sits below the MRI and never imports it). An expert is dead when its
utilisation (tie-aware routed tokens / fair share, ``Scan.utilisation``) is below the
threshold, as in :func:`darwinmerge.mri.metrics.dead_fraction`.
"""

from __future__ import annotations

import json
from pathlib import Path

from darwinmerge.errors import ConfigError
from darwinmerge.merge.revive import SCAN_READERS, DeadExperts
from darwinmerge.mri.scan import Scan

__all__ = ["dead_experts", "read_mri_scan"]


def dead_experts(scan: Scan, threshold: float) -> dict[int, list[int]]:
    """``{layer: [experts with utilisation < threshold]}`` over the scan's sparse layers."""
    util = scan.utilisation
    return {
        layer: [e for e in range(util.shape[1]) if float(util[s, e]) < threshold]
        for s, layer in enumerate(scan.sparse_layers)
    }


@SCAN_READERS.register("mri")
def read_mri_scan(path: Path, threshold: float) -> DeadExperts | None:
    """A ``darwin mri`` scan folder (``scan.json``) or a scan's JSON file (``scan_a.json``
    of a comparison); ``None`` for anything else."""
    target = path
    if path.is_dir():
        target = path / "scan.json"
        if not target.is_file():
            pair = [p.name for p in sorted(path.glob("scan_*.json"))]
            if pair:
                raise ConfigError(
                    f"{path} holds several scans ({', '.join(pair)}); give the JSON file of "
                    "the receiving parent's scan"
                )
            return None
    if target.suffix != ".json" or not target.is_file():
        return None
    try:
        kind = json.loads(target.read_text(encoding="utf-8")).get("kind")
    except (ValueError, AttributeError):
        return None
    if kind != Scan.KIND:
        return None
    scan = Scan.load(target)
    return DeadExperts(
        dead=dead_experts(scan, threshold),
        num_layers=scan.num_layers,
        num_experts=scan.num_experts,
        sparse_layers=tuple(scan.sparse_layers),
        origin=str(target),
    )
