import numpy as np
import pytest
import torch

from darwinmerge.errors import ArchitectureMismatchError, UnknownNameError
from darwinmerge.mri import Capture, resolve_layout, run_scan

from .conftest import batches, byte_encode, small_probes, tiny, zero_layer_outputs

MOE = ["qwen3_5_moe", "qwen3_moe", "qwen2_moe", "mixtral"]


def _reference_bi(model, probes):
    """Per category: 1 - token-mean cos(x_l, x_{l+1}), one unpadded sequence at a time,
    with plain forward hooks (independent of Capture)."""
    layers = model.model.layers
    out = {}
    for cat, texts in probes.texts.items():
        sums = np.zeros(len(layers))
        n = 0
        for text in texts:
            ids = torch.tensor([byte_encode(text)[:40]])
            got = {}
            hooks = [
                layer.register_forward_hook(
                    lambda m, a, k, o, i=i, got=got: got.__setitem__(
                        i, (a[0] if a else k["hidden_states"], o)
                    ),
                    with_kwargs=True,
                )
                for i, layer in enumerate(layers)
            ]
            try:
                with torch.no_grad():
                    model(input_ids=ids, use_cache=False)
            finally:
                for h in hooks:
                    h.remove()
            for i, (x, y) in got.items():
                y = y[0] if isinstance(y, tuple) else y
                sums[i] += torch.nn.functional.cosine_similarity(x, y, dim=-1).double().sum().item()
            n += ids.shape[1]
        out[cat] = 1 - sums / n
    return out


@pytest.mark.parametrize("family", ["qwen3_5_moe", "mixtral", "llama"])
def test_block_influence_matches_unpadded_reference(family):
    model = tiny(family, seed=3)
    probes = small_probes(per_category=3, categories=2)
    pb = batches(per_category=3, categories=2, batch_size=4)
    scan = run_scan(model, pb)
    ref = _reference_bi(model, probes)
    for c, cat in enumerate(scan.categories):
        np.testing.assert_allclose(scan.bi[c], ref[cat], atol=2e-6)
    assert (scan.bi > 1e-4).all()


def test_identity_layers_have_zero_block_influence(probe_batches):
    model = tiny("qwen3_5_moe", seed=1)
    zero_layer_outputs(model, 1)  # linear-attention layer
    zero_layer_outputs(model, 3)  # full-attention layer
    scan = run_scan(model, probe_batches)
    assert np.abs(scan.bi[:, [1, 3]]).max() < 1e-6
    assert np.abs(scan.angular_last[:, [1, 3]]).max() < 2e-3  # arccos is steep at 1
    assert scan.bi[:, [0, 2]].min() > 1e-3
    assert scan.angular_last[:, [0, 2]].min() > 1e-2


@pytest.mark.parametrize("family", MOE)
def test_router_statistics_are_consistent(family, probe_batches):
    model = tiny(family, seed=2)
    scan = run_scan(model, probe_batches)
    layout = resolve_layout(model)
    assert scan.sparse_layers == list(range(layout.num_layers))
    S, E = scan.utilisation.shape
    assert E == layout.num_experts and scan.top_k == layout.top_k == 2
    # every token places top_k slots: mean utilisation over experts is exactly 1
    np.testing.assert_allclose(scan.utilisation.mean(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(scan.prob_share.mean(1), 1.0, atol=1e-9)
    # random routers have no ties: tie-aware counts equal the router's own choices
    assert (scan.tie_fraction == 0).all()
    np.testing.assert_allclose(scan.utilisation, scan.utilisation_hard, atol=1e-12)
    assert ((scan.router_entropy > 0.5) & (scan.router_entropy <= 1)).all()
    assert ((scan.load_entropy > 0.5) & (scan.load_entropy <= 1 + 1e-12)).all()
    assert np.isfinite(scan.expert_similarity).all()


def test_qwen2_moe_dense_layers_have_no_router(probe_batches):
    model = tiny("qwen2_moe", seed=0, mlp_only_layers=[1], decoder_sparse_step=1)
    scan = run_scan(model, probe_batches)
    assert scan.sparse_layers == [0, 2, 3]
    assert scan.utilisation.shape[0] == 3


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_after_exception(probe_batches):
    model = tiny("qwen3_5_moe")
    before = _hook_count(model)
    batch = probe_batches.batches[0]
    ref = model(input_ids=batch.input_ids, attention_mask=batch.mask).logits
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(model, probe_batches.num_sequences, keep_layer_inputs=True) as cap:
            assert _hook_count(model) == before + 4 + 4 + 4  # post, pre, router
            cap.forward(batch)
            raise RuntimeError("boom")
    assert _hook_count(model) == before
    assert not cap.active
    torch.testing.assert_close(
        model(input_ids=batch.input_ids, attention_mask=batch.mask).logits, ref
    )


def test_hook_error_inside_forward_also_removes_hooks(probe_batches):
    model = tiny("mixtral")
    before = _hook_count(model)
    # a model run without Capture.forward has no batch: the hook raises, hooks go away
    with pytest.raises(Exception, match="without Capture.forward"):
        with Capture(model, probe_batches.num_sequences):
            model(input_ids=probe_batches.batches[0].input_ids)
    assert _hook_count(model) == before


def test_missing_hook_point_fails_loudly():
    model = tiny("qwen3_moe")
    del model.model.layers[2].mlp.gate
    with pytest.raises(ArchitectureMismatchError, match=r"layer 2 .*mlp.gate"):
        Capture(model, 1)
    model = tiny("llama")
    model.model.norm = None
    with pytest.raises(ArchitectureMismatchError, match="final norm"):
        resolve_layout(model)


def test_unknown_family_is_refused():
    model = tiny("llama")
    model.config.model_type = "gpt2"
    with pytest.raises(UnknownNameError, match="gpt2"):
        resolve_layout(model)
