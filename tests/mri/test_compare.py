import copy

import numpy as np
import pytest
import torch

from darwinmerge.errors import ArchitectureMismatchError
from darwinmerge.mri import (
    compare_scans,
    resolve_layout,
    run_scan,
    sequence_nll,
    spearman,
    swap_scan,
)

from .conftest import tiny


def _loss_per_category(model, pb):
    C = len(pb.categories)
    nll, cnt = np.zeros(C), np.zeros(C)
    with torch.no_grad():
        for b in pb:
            logits = model(input_ids=b.input_ids, attention_mask=b.mask, use_cache=False).logits
            s, c = sequence_nll(logits, b)
            for row in range(len(b.category)):
                nll[int(b.category[row])] += float(s[row])
                cnt[int(b.category[row])] += float(c[row])
    return nll / cnt


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_swapping_a_layer_with_itself_changes_no_loss(probe_batches):
    a = tiny("qwen3_5_moe", seed=0)
    twin = copy.deepcopy(a)
    res = swap_scan(a, twin, probe_batches)
    np.testing.assert_allclose(res.loss, _loss_per_category(a, probe_batches), rtol=1e-6)
    assert np.abs(res.delta).max() < 1e-6


@pytest.mark.parametrize(
    "family,multimodal",
    [("qwen3_5_moe", False), ("qwen3_5_moe", True), ("mixtral", False), ("qwen2", False)],
)
def test_swap_scan_equals_full_forward_of_the_swapped_model(family, multimodal, probe_batches):
    kw = {"multimodal": True} if multimodal else {}
    a, b = tiny(family, seed=0, **kw), tiny(family, seed=1, **kw)
    layers_path = resolve_layout(a).layers_path
    before = _state(a)
    res = swap_scan(a, b, probe_batches)
    after = _state(a)
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored bit-exactly
    prefix_b = dict(b.named_parameters())
    for layer in range(resolve_layout(a).num_layers):
        m = copy.deepcopy(a)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.startswith(f"{layers_path}.{layer}."):
                    p.copy_(prefix_b[name])
        expect = _loss_per_category(m, probe_batches)
        np.testing.assert_allclose(res.loss_swapped[:, layer], expect, rtol=2e-5)
    assert np.abs(res.delta).min() > 0  # different parents: every swap moves the loss


def test_partial_layers_and_mismatch(probe_batches):
    a, b = tiny("llama", seed=0), tiny("llama", seed=1)
    res = swap_scan(a, b, probe_batches, layers=[2])
    assert np.isnan(res.loss_swapped[:, [0, 1, 3]]).all()
    assert np.isfinite(res.loss_swapped[:, 2]).all()
    with pytest.raises(ArchitectureMismatchError, match="equal depth"):
        swap_scan(a, tiny("llama", num_layers=2), probe_batches)


def test_compare_scans_maps(probe_batches):
    a, b = tiny("qwen3_moe", seed=0), tiny("qwen3_moe", seed=1)
    sa, sb = run_scan(a, probe_batches, model_name="A"), run_scan(b, probe_batches, model_name="B")
    ab, ba = swap_scan(a, b, probe_batches), swap_scan(b, a, probe_batches)
    cmp = compare_scans(sa, sb, ab, ba)
    np.testing.assert_array_equal(cmp.advantage, sa.bi - sb.bi)
    np.testing.assert_allclose(cmp.loss_a, sa.loss, rtol=1e-6)
    np.testing.assert_allclose(ab.loss, sa.loss, rtol=1e-6)
    np.testing.assert_allclose(cmp.swap_advantage, (ab.delta - ba.delta) / 2)
    assert len(cmp.agreement_spearman) == len(sa.categories)
    assert 0.0 <= cmp.agreement_sign <= 1.0
    no_swap = compare_scans(sa, sb)
    assert np.isnan(no_swap.swap_ab).all() and np.isnan(no_swap.agreement_sign)


def test_spearman():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(
        0.9486833, abs=1e-6
    )
    assert np.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))
