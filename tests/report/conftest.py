"""Scans of two tiny MoE parents (built once per test module)."""

from __future__ import annotations

import pytest

from darwinmerge.mri import builtin_probes, compare_scans, run_scan, swap_scan, tokenize_probes
from darwinmerge.zoo.tiny import build_tiny_model


def _encode(text: str) -> list[int]:
    return [b % 128 for b in text.encode("utf-8")]


@pytest.fixture(scope="package")
def parent_scans():
    pb = tokenize_probes(builtin_probes().take(2), _encode, max_length=32, batch_size=6)
    a = build_tiny_model("qwen3_moe", seed=0)
    b = build_tiny_model("qwen3_moe", seed=1)
    sa, sb = run_scan(a, pb, model_name="father"), run_scan(b, pb, model_name="mother")
    cmp = compare_scans(sa, sb, swap_scan(a, b, pb), swap_scan(b, a, pb))
    return sa, sb, cmp
