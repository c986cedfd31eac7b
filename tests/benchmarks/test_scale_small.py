"""The scale benchmark's small mode runs end to end and cleans up after itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scale_merge_small_mode(tmp_path: Path) -> None:
    work = tmp_path / "scale"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scale_merge.py"),
            "--small",
            "--workdir",
            str(work),
            "--methods",
            "linear,ties",
            "--no-drop-caches",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for row in (
        "I/O floor (read 2",
        "I/O floor, darwin's I/O",
        "darwin linear",
        "darwin ties",
        "bare torch.lerp",
    ):
        assert row in out, out
    assert "machine at start:" in out and "machine at end:" in out
    # one ties row per pair: the Qwen3.5 set and the qwen3_moe trio
    assert sum(line.split()[1:3] == ["darwin", "ties"] for line in out.splitlines()) == 2
    # the resident engine's child equalled torch.lerp (asserted inside; exit 0 above)
    assert "ResidentMerge.apply" in out or "merge_into" in out
    # nothing left behind: every parent and child was deleted
    assert list(work.iterdir()) == []
