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


@pytest.mark.parametrize("family", ["qwen3_5_moe", "llama"])
def test_swap_scan_memory_budget_gives_identical_results(family):
    """Chunked (bounded) and all-at-once (the old approach) give the same numbers bit for
    bit, and the kept hidden-state bytes follow the documented bound."""
    from darwinmerge.mri import hidden_bytes, swap_chunks, tokenize_probes

    from .conftest import byte_encode, small_probes

    # lengths differ within batches, so the batches are padded and carry attention masks
    pb = tokenize_probes(small_probes(3, 3), byte_encode, max_length=48, batch_size=2)
    a, b = tiny(family, seed=0), tiny(family, seed=1)
    sizes = [hidden_bytes(a, batch) for batch in pb]
    L, H = resolve_layout(a).num_layers, 32
    assert sizes == [L * bt.input_ids.numel() * H * 4 for bt in pb]  # L x B x T x H x 4
    whole = swap_scan(a, b, pb, budget_bytes=None)
    assert whole.chunks == 1 and whole.peak_hidden_bytes == sum(sizes)
    for budget in (1, 2 * max(sizes), sum(sizes) // 2):
        chunks = swap_chunks(a, pb, budget)
        assert sorted(i for c in chunks for i in c) == list(range(len(pb)))
        res = swap_scan(a, b, pb, budget_bytes=budget)
        np.testing.assert_array_equal(res.loss, whole.loss)
        np.testing.assert_array_equal(res.loss_swapped, whole.loss_swapped)
        assert res.chunks == len(chunks) > 1
        assert res.peak_hidden_bytes == max(sum(sizes[i] for i in c) for c in chunks)
        assert res.peak_hidden_bytes <= max(budget, max(sizes))
        # call kwargs (rotary tables, masks, positions) are shared by all layers of a batch:
        # at most B * T * (2 * head_dim * 4 + 8 + 4 * T) bytes per batch, not times L
        extra = max(
            sum(
                pb.batches[i].input_ids.numel() * (2 * 8 * 4 + 8 + 4 * pb.batches[i].mask.shape[1])
                for i in c
            )
            for c in chunks
        )
        assert res.peak_hidden_bytes < res.peak_kept_bytes <= res.peak_hidden_bytes + extra
    assert swap_scan(a, b, pb, budget_bytes=1).chunks == len(pb)


def test_progress_counts_chunk_layer_steps(probe_batches):
    a, b = tiny("llama", seed=0), tiny("llama", seed=1)
    steps = []
    res = swap_scan(a, b, probe_batches, budget_bytes=1, progress=steps.append)
    assert res.chunks == len(probe_batches) and sum(steps) == res.chunks * 4


def test_swapped_layer_writes_and_restores_bit_exactly():
    from darwinmerge.mri import swapped_layer

    a, b = tiny("qwen3_5_moe", seed=0), tiny("qwen3_5_moe", seed=1)
    la, lb = resolve_layout(a).layers[3], resolve_layout(b).layers[3]
    before = _state(la)
    with swapped_layer(la, lb) as layer:
        assert layer is la
        assert all(torch.equal(v, lb.state_dict()[k]) for k, v in la.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in la.state_dict().items())
    with pytest.raises(RuntimeError), swapped_layer(la, lb):  # restored after an error too
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in la.state_dict().items())
    with pytest.raises(ArchitectureMismatchError, match="differ in tensor names"):
        swapped_layer(la, resolve_layout(a).layers[0]).__enter__()  # linear vs full attention


@pytest.mark.parametrize("family", ["qwen3_5_moe", "mixtral", "qwen2"])
def test_component_swap_equals_full_forward_of_the_part_swapped_model(family, probe_batches):
    """Swapping only a layer's attention (or only its FFN) gives the loss of a model with
    exactly those tensors from B, and leaves A bit-exact; the parts differ from the whole."""
    from darwinmerge.mri import SWAP_PARTS, part_keys

    a, b = tiny(family, seed=0), tiny(family, seed=1)
    lay = resolve_layout(a)
    before = _state(a)
    res = swap_scan(a, b, probe_batches, parts=tuple(SWAP_PARTS))
    assert all(torch.equal(before[k], v) for k, v in _state(a).items())
    params_b = dict(b.named_parameters())
    for part in SWAP_PARTS:
        for layer in range(lay.num_layers):
            keys = part_keys(lay.layers[layer], part)
            assert keys, f"{family} layer {layer} has no {part} tensors"
            names = {f"{lay.layers_path}.{layer}.{k}" for k in keys}
            m = copy.deepcopy(a)
            with torch.no_grad():
                for name, p in m.named_parameters():
                    if name in names:
                        p.copy_(params_b[name])
            expect = _loss_per_category(m, probe_batches)
            np.testing.assert_allclose(res.part_swapped[part][:, layer], expect, rtol=2e-5)
    # the two parts are disjoint and neither is the whole layer (norms move with neither)
    att = set(part_keys(lay.layers[0], "attention"))
    ffn = set(part_keys(lay.layers[0], "ffn"))
    assert not att & ffn and att | ffn < set(lay.layers[0].state_dict())
    for part in SWAP_PARTS:
        assert not np.allclose(res.part_swapped[part], res.loss_swapped, rtol=1e-4)


def test_component_swaps_reach_the_comparison_and_its_file(probe_batches, tmp_path):
    from darwinmerge.mri import ComparisonScan

    a, b = tiny("qwen3_moe", seed=0), tiny("qwen3_moe", seed=1)
    sa, sb = run_scan(a, probe_batches, model_name="A"), run_scan(b, probe_batches, model_name="B")
    ab = swap_scan(a, b, probe_batches, parts=("attention", "ffn"))
    ba = swap_scan(b, a, probe_batches, parts=("attention", "ffn"))
    cmp = compare_scans(sa, sb, ab, ba)
    for part in ("attention", "ffn"):
        got = cmp.part_swaps(part)
        assert got is not None
        np.testing.assert_allclose(got[0], ab.part_swapped[part] - ab.loss[:, None])
        np.testing.assert_allclose(got[1], ba.part_swapped[part] - ba.loss[:, None])
    cmp.save(tmp_path / "with")
    assert ComparisonScan.load(tmp_path / "with") == cmp
    plain = compare_scans(sa, sb, swap_scan(a, b, probe_batches), swap_scan(b, a, probe_batches))
    assert plain.part_swaps("attention") is None
    # a comparison saved before component swaps existed (no such keys) still loads
    plain.save(tmp_path / "old")
    import json

    doc = json.loads((tmp_path / "old" / "comparison.json").read_text())
    for k in [k for k in doc if k.startswith("swap_ab_") or k.startswith("swap_ba_")]:
        del doc[k]
    (tmp_path / "old" / "comparison.json").write_text(json.dumps(doc))
    assert ComparisonScan.load(tmp_path / "old").part_swaps("ffn") is None
