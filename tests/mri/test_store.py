import json

import numpy as np
import pytest

from darwinmerge.errors import CheckpointError
from darwinmerge.mri import ComparisonScan, Scan, compare_scans, run_scan, swap_scan

from .conftest import tiny


def test_scan_round_trip(tmp_path, probe_batches):
    scan = run_scan(tiny("qwen2_moe"), probe_batches, model_name="m")
    path = scan.save(tmp_path)
    assert path.name == "scan.json" and (tmp_path / "scan.npz").is_file()
    back = Scan.load(tmp_path)
    assert back == scan
    assert back.categories == scan.categories and back.bootstrap == scan.bootstrap
    back.bi[0, 0] += 1e-9
    assert back != scan


def test_comparison_round_trip_keeps_nan(tmp_path, probe_batches):
    a, b = tiny("llama", seed=0), tiny("llama", seed=1)
    sa, sb = run_scan(a, probe_batches), run_scan(b, probe_batches)
    cmp = compare_scans(sa, sb, swap_scan(a, b, probe_batches, layers=[0]), None)
    cmp.save(tmp_path, "cmp")
    back = ComparisonScan.load(tmp_path / "cmp.json")
    assert back == cmp
    assert np.isnan(back.swap_ba).all()


def test_load_errors(tmp_path, probe_batches):
    with pytest.raises(CheckpointError, match="not found"):
        Scan.load(tmp_path)
    scan = run_scan(tiny("llama"), probe_batches)
    scan.save(tmp_path)
    with pytest.raises(CheckpointError, match="holds a 'scan'"):
        ComparisonScan.load(tmp_path / "scan.json")
    doc = json.loads((tmp_path / "scan.json").read_text())
    (tmp_path / "scan.npz").unlink()
    with pytest.raises(CheckpointError, match="scan.npz is missing"):
        Scan.load(tmp_path)
    assert doc["kind"] == "scan"
