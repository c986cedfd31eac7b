"""GPU checks (opt in: ``pytest -m gpu`` on a machine with CUDA). Not part of ``make test``."""

import pytest
import torch

from darwinmerge.merge import Recipe, merge_to_disk
from darwinmerge.zoo.tiny import build_tiny_model, make_parent_pair, save_tiny

from .merge.conftest import read_tensors

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu marker was selected but CUDA is not available")


@pytest.mark.parametrize("method", ["slerp", "ties", "dare_ties"])
def test_cuda_merge_matches_cpu(tmp_path, method):
    a, b = make_parent_pair("qwen3_5_moe", tmp_path, layout_a="fused")
    base = save_tiny(build_tiny_model("qwen3_5_moe", seed=7), tmp_path / "base")
    params = {"t": 0.4} if method == "slerp" else {"weight": 0.5, "density": 0.6}
    recipe = Recipe.parse(
        {
            "parents": [{"name": "f", "path": str(a)}, {"name": "m", "path": str(b)}],
            "base": None if method == "slerp" else str(base),
            "method": method,
            "parameters": params,
            "seed": 1,
        }
    )
    cpu = read_tensors(merge_to_disk(recipe, tmp_path / "cpu", device="cpu").out_dir)
    gpu = read_tensors(merge_to_disk(recipe, tmp_path / "gpu", device="cuda").out_dir)
    assert cpu.keys() == gpu.keys()
    for k in cpu:
        if method == "dare_ties":  # random masks come from the device's generator
            assert gpu[k].shape == cpu[k].shape and torch.isfinite(gpu[k]).all()
        else:
            assert torch.allclose(cpu[k], gpu[k], rtol=1e-4, atol=1e-5), k
