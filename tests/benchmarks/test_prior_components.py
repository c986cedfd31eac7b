"""benchmarks/prior_components.py: the layers-only copy of a comparison folder."""

from __future__ import annotations

import numpy as np

from darwinmerge.evolve import build_space, mri_prior, parse_space_config
from darwinmerge.mri import ComparisonScan, Scan
from tests.benchmarks.scripts import load_benchmark
from tests.evolve.test_prior import _ctx, _scans_with_parts


def test_layers_only_drops_the_component_swaps_and_keeps_the_rest(tmp_path):
    pc = load_benchmark("prior_components")
    comp, a, b = _scans_with_parts()
    src = tmp_path / "mri"
    comp.save(src)
    a.save(src, "scan_a")
    b.save(src, "scan_b")
    out = pc.layers_only(src, tmp_path / "plain")
    plain = ComparisonScan.load(out)
    assert plain.part_swaps("attention") is None and plain.part_swaps("ffn") is None
    np.testing.assert_array_equal(plain.swap_advantage, comp.swap_advantage)
    assert Scan.load(out, "scan_b") == b
    assert ComparisonScan.load(src).part_swaps("ffn") is not None  # the source is untouched
    space = build_space(parse_space_config({"kind": "seed", "max_blocks": 4}), _ctx())
    with_parts = space.values(mri_prior(space, comp, a, b).mean)
    without = space.values(mri_prior(space, plain, a, b).mean)
    assert without["attn"] == 0.5 and with_parts["attn"] < 0.5
    assert without["t_1"] == with_parts["t_1"]  # only the component genes differ
