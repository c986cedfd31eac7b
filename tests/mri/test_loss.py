"""Completion-only probe loss: prompt tokens are masked in the scan and the swap scan."""

import numpy as np
import pytest
import torch

from darwinmerge.errors import ConfigError
from darwinmerge.mri import (
    ProbeSet,
    ScanOptions,
    compare_scans,
    run_scan,
    sequence_nll,
    swap_scan,
    tokenize_probes,
)

from .conftest import byte_encode, tiny

PROBES = ProbeSet(
    {
        "MATH": ("calc 12+7\n12+7=19\nANSWER: 19", "calc 3+4\n3+4=7\nANSWER: 7"),
        "TEXT": ("The cat sat on the mat.", "A small shop sells bread."),
    },
    {"MATH": (10, 9), "TEXT": (0, 0)},
)


def _manual(model, text, prompt_chars):
    """Token-mean next-token NLL over the targets past the prompt, one sequence."""
    ids = torch.tensor([byte_encode(text)])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].double()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
    first = max(prompt_chars, 1)  # the first target is token 1
    return float(nll[first - 1 :].sum()), len(nll) - (first - 1)


@pytest.mark.parametrize("family", ["llama", "qwen3_5_moe"])
def test_scan_loss_counts_completion_tokens_only(family):
    model = tiny(family, seed=2)
    pb = tokenize_probes(PROBES, byte_encode, batch_size=3)
    done = run_scan(model, pb, options=ScanOptions(loss_tokens="completion"))
    every = run_scan(model, pb, options=ScanOptions(loss_tokens="all"))
    assert done.loss_tokens == "completion" and every.loss_tokens == "all"
    for c, cat in enumerate(PROBES.categories):
        for tokens, scan in (("completion", done), ("all", every)):
            sums = [
                _manual(model, t, n if tokens == "completion" else 0)
                for t, n in zip(PROBES.texts[cat], PROBES.prompt_chars[cat], strict=True)
            ]
            expect = sum(s for s, _ in sums) / sum(k for _, k in sums)
            np.testing.assert_allclose(scan.loss[c], expect, rtol=1e-5)
    # MATH has prompts: the losses differ; TEXT has none: identical
    assert abs(done.loss[0] - every.loss[0]) > 1e-3
    assert done.loss[1] == every.loss[1]
    # only the loss depends on the choice; BI counts every real token either way
    np.testing.assert_array_equal(done.bi, every.bi)
    assert done.nll_count.sum() == every.nll_count.sum() - (9 + 8)


def test_category_without_completion_tokens_has_nan_loss():
    p = ProbeSet({"A": ("x" * 30 + "yz",), "B": ("hello there",)}, {"A": (30,), "B": (0,)})
    pb = tokenize_probes(p, byte_encode, max_length=16)  # A's completion is cut off
    scan = run_scan(tiny("llama"), pb)
    assert np.isnan(scan.loss[0]) and np.isfinite(scan.loss[1])


def test_sequence_nll_masks_prompt_targets():
    pb = tokenize_probes(PROBES, byte_encode, batch_size=4)
    (b,) = pb.batches[:1]
    logits = torch.zeros(*b.input_ids.shape, 128)  # uniform: every target costs log 128
    s_all, c_all = sequence_nll(logits, b, "all")
    s_cmp, c_cmp = sequence_nll(logits, b, "completion")
    np.testing.assert_allclose(s_all.numpy(), c_all.numpy() * np.log(128), rtol=1e-7)
    np.testing.assert_allclose(s_cmp.numpy(), c_cmp.numpy() * np.log(128), rtol=1e-7)
    prompt = b.prompt_len.clamp_min(1) - 1  # targets inside the prompt
    np.testing.assert_array_equal(c_all.numpy() - c_cmp.numpy(), prompt.double().numpy())


def test_swap_losses_and_refusal_to_mix_losses():
    a, b = tiny("qwen3_moe", seed=0), tiny("qwen3_moe", seed=1)
    pb = tokenize_probes(PROBES, byte_encode, batch_size=2)
    sa = run_scan(a, pb)
    sb = run_scan(b, pb)
    ab = swap_scan(a, b, pb)
    ab_all = swap_scan(a, b, pb, loss_tokens="all")
    assert ab.loss_tokens == "completion" and ab_all.loss_tokens == "all"
    np.testing.assert_allclose(ab.loss, sa.loss, rtol=1e-6)
    assert abs(ab.loss[0] - ab_all.loss[0]) > 1e-3
    cmp = compare_scans(sa, sb, ab, swap_scan(b, a, pb))
    assert cmp.loss_tokens == "completion"
    with pytest.raises(ConfigError, match="swap A<-B: all"):
        compare_scans(sa, sb, ab_all, None)
    sb_all = run_scan(b, pb, options=ScanOptions(loss_tokens="all"))
    with pytest.raises(ConfigError, match="scan B: all"):
        compare_scans(sa, sb_all)
    with pytest.raises(ConfigError, match="loss_tokens"):
        swap_scan(a, b, pb, loss_tokens="answer")
