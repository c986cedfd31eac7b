import numpy as np
import pytest
import torch

from darwinmerge.mri import WeightScan, weight_scan
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny


def _save(model, path, layout="per_expert"):
    return save_tiny(model, path, layout=layout)


def test_identical_parents_and_known_delta(tmp_path):
    a = build_tiny_model("qwen3_5_moe", seed=0)
    pa = _save(a, tmp_path / "a", "fused")
    pa2 = _save(a, tmp_path / "a2", "per_expert")
    ws = weight_scan(pa, pa2)
    assert np.nanmax(ws.rel_delta) == 0 and np.isnan(ws.task_cosine).all()
    assert "experts" in ws.components and "linear_attn" in ws.components
    assert np.isnan(ws.rel_delta[0, ws.components.index("attn")])  # layer 0 is linear
    b = build_tiny_model("qwen3_5_moe", seed=0)
    with torch.no_grad():
        w = b.model.layers[2].mlp.gate.weight
        delta = torch.randn_like(w)
        w.add_(delta)
    pb = _save(b, tmp_path / "b")
    ws = weight_scan(pa, pb)
    k = ws.components.index("router")
    expect = delta.norm() / a.model.layers[2].mlp.gate.weight.detach().norm()
    assert ws.rel_delta[2, k] == pytest.approx(float(expect), rel=1e-5)
    ws.rel_delta[2, k] = 0
    assert np.nanmax(ws.rel_delta) == 0 and np.nanmax(ws.global_rel_delta) == 0


def test_task_vectors_with_base(tmp_path):
    base = build_tiny_model("mixtral", seed=0)
    a, b = build_tiny_model("mixtral", seed=0), build_tiny_model("mixtral", seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            t = torch.randn(pa.shape, generator=gen)
            pa.add_(t)
            if ".layers.1." in name:
                pb.sub_(t)  # opposite task vector in layer 1
            elif ".layers.2." in name:
                pb.add_(2 * t)  # same direction, twice as long
            else:
                pb.add_(torch.randn(pa.shape, generator=gen))
    paths = [_save(m, tmp_path / n) for m, n in ((base, "base"), (a, "a"), (b, "b"))]
    ws = weight_scan(paths[1], paths[2], paths[0])
    np.testing.assert_allclose(ws.task_cosine[1], -1.0, atol=1e-6)
    np.testing.assert_allclose(ws.sign_conflict[1], 1.0)
    np.testing.assert_allclose(ws.task_cosine[2], 1.0, atol=1e-6)
    np.testing.assert_allclose(ws.sign_conflict[2], 0.0)
    assert np.abs(ws.task_cosine[[0, 3]]).max() < 0.3  # independent noise
    assert 0.3 < np.nanmin(ws.sign_conflict[[0, 3]]) and np.nanmax(ws.sign_conflict[[0, 3]]) < 0.7
    ws.save(tmp_path / "out")
    assert WeightScan.load(tmp_path / "out") == ws
