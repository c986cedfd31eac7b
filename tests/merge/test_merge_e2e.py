"""End to end: recipes merged to disk on tiny models of the seed's and other families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from darwinmerge.merge import Recipe, merge_to_disk
from darwinmerge.zoo.tiny import build_tiny_model, make_parent_pair, save_tiny

from .conftest import logits_of, read_tensors


def _recipe(a: Path, b: Path, method: str = "slerp", params=None, **kw) -> Recipe:
    return Recipe.parse(
        {
            "parents": [{"name": "father", "path": str(a)}, {"name": "mother", "path": str(b)}],
            "method": method,
            "parameters": params if params is not None else {"t": 0.0},
            **kw,
        }
    )


@pytest.mark.parametrize("family", ["qwen3_5_moe", "qwen3_moe", "llama"])
def test_slerp_t0_gives_parent_a_logits(tmp_path, ids, family):
    a, b = make_parent_pair(family, tmp_path)
    out = tmp_path / "child"
    res = merge_to_disk(_recipe(a, b), out)
    assert res.tensors == len(read_tensors(a))
    assert torch.equal(logits_of(out, ids), logits_of(a, ids))
    # and t=1 is parent B, t=0.5 is neither
    merge_to_disk(_recipe(a, b, params={"t": 1.0}), tmp_path / "c1")
    assert torch.allclose(logits_of(tmp_path / "c1", ids), logits_of(b, ids), atol=1e-5)
    # the written child carries the recipe, a model card and the donor's config
    card = (out / "README.md").read_text()
    assert "merge" in card and "slerp" in card
    assert (
        json.loads((out / "config.json").read_text())["model_type"]
        == json.loads((a / "config.json").read_text())["model_type"]
    )


def test_fused_and_per_expert_inputs_give_the_same_child(tmp_path):
    ma = build_tiny_model("qwen3_5_moe", seed=0)
    mb = build_tiny_model("qwen3_5_moe", seed=1)
    base = build_tiny_model("qwen3_5_moe", seed=2)
    a_pe, a_fu = save_tiny(ma, tmp_path / "a_pe"), save_tiny(ma, tmp_path / "a_fu", layout="fused")
    b_pe, b_fu = save_tiny(mb, tmp_path / "b_pe"), save_tiny(mb, tmp_path / "b_fu", layout="fused")
    base_pe = save_tiny(base, tmp_path / "base")
    params = {"weight": 0.6, "density": 0.5}
    outs = {}
    for tag, (a, b) in {"pe": (a_pe, b_pe), "mixed": (a_pe, b_fu), "fu": (a_fu, b_fu)}.items():
        r = _recipe(a, b, method="ties", params=params, base=str(base_pe), donor="father")
        outs[tag] = read_tensors(merge_to_disk(r, tmp_path / f"out_{tag}").out_dir)
    assert outs["pe"].keys() == outs["mixed"].keys()
    for k in outs["pe"]:
        assert torch.equal(outs["pe"][k], outs["mixed"][k]), k
    # fused donor: child written fused, same numbers as the per-expert child
    fu = outs["fu"]
    assert "model.layers.0.mlp.experts.gate_up_proj" in fu
    gate_up = fu["model.layers.0.mlp.experts.gate_up_proj"]
    inter = gate_up.shape[1] // 2
    for e in range(gate_up.shape[0]):
        pe_gate = outs["pe"][f"model.layers.0.mlp.experts.{e}.gate_proj.weight"]
        pe_up = outs["pe"][f"model.layers.0.mlp.experts.{e}.up_proj.weight"]
        assert torch.equal(gate_up[e, :inter], pe_gate)
        assert torch.equal(gate_up[e, inter:], pe_up)


def test_multimodal_fused_father_and_text_mother_keep_every_expert(tmp_path, ids):
    """The seed's real case: father multimodal + fused + mtp, mother text-only per-expert."""
    a, b = make_parent_pair(
        "qwen3_5_moe", tmp_path, multimodal_a=True, layout_a="fused", mtp_a=True
    )
    father = read_tensors(a)
    out = tmp_path / "child"
    res = merge_to_disk(_recipe(a, b, method="linear", params={"weight": 0.5}), out)
    child = read_tensors(out)
    assert child.keys() == father.keys()  # every routed expert, vision tower and MTP kept
    assert any(k.startswith("mtp.") for k in child) and any(".visual." in k for k in child)
    mother = read_tensors(b)
    # an expert slice of the child is the mean of father's fused slice and mother's expert
    name = "model.language_model.layers.1.mlp.experts.gate_up_proj"
    inter = child[name].shape[1] // 2
    want = (
        0.5 * father[name][2, inter:] + 0.5 * mother["model.layers.1.mlp.experts.2.up_proj.weight"]
    )
    assert torch.allclose(child[name][2, inter:], want, atol=1e-6)
    for key in (k for k in child if k.startswith("mtp.") or ".visual." in k):
        assert torch.equal(child[key], father[key]), key  # one-parent tensors copied verbatim
    assert any("copied" in n for n in res.notes)


def test_multimodal_per_expert_father_keeps_routed_experts(tmp_path):
    """mergekit 0.1.5 drops every routed expert here (97 of 193 tensors written)."""
    a, b = make_parent_pair("qwen3_5_moe", tmp_path, multimodal_a=True)
    merge_to_disk(_recipe(a, b, params={"t": 0.5}), tmp_path / "child")
    child, father = read_tensors(tmp_path / "child"), read_tensors(a)
    assert child.keys() == father.keys()
    assert sum(".experts." in k for k in child) == sum(".experts." in k for k in father) > 0


def test_router_source_and_expert_transplant(tmp_path):
    a, b = make_parent_pair("qwen3_moe", tmp_path)
    ta, tb = read_tensors(a), read_tensors(b)
    r = _recipe(
        a,
        b,
        params={"t": 0.5},
        router=[{"layers": [3, 3], "source": "mother"}],
        transplants=[{"layer": 1, "expert": 2, "source": "mother", "source_expert": 0}],
    )
    child = read_tensors(merge_to_disk(r, tmp_path / "child").out_dir)
    assert torch.equal(
        child["model.layers.3.mlp.gate.weight"], tb["model.layers.3.mlp.gate.weight"]
    )
    router1 = child["model.layers.1.mlp.gate.weight"]
    assert torch.equal(router1[2], tb["model.layers.1.mlp.gate.weight"][0])
    assert not torch.equal(router1[1], tb["model.layers.1.mlp.gate.weight"][1])
    for proj in ("gate_proj", "up_proj", "down_proj"):
        got = child[f"model.layers.1.mlp.experts.2.{proj}.weight"]
        assert torch.equal(got, tb[f"model.layers.1.mlp.experts.0.{proj}.weight"])
        other = child[f"model.layers.1.mlp.experts.1.{proj}.weight"]
        assert not torch.equal(other, ta[f"model.layers.1.mlp.experts.1.{proj}.weight"])


def test_transplant_into_fused_layout(tmp_path):
    a, b = make_parent_pair("qwen3_5_moe", tmp_path, layout_a="fused")
    tb = read_tensors(b)
    r = _recipe(
        a, b, params={"t": 0.0}, transplants=[{"layer": 0, "expert": 3, "source": "mother"}]
    )
    child = read_tensors(merge_to_disk(r, tmp_path / "child").out_dir)
    gu = child["model.layers.0.mlp.experts.gate_up_proj"]
    inter = gu.shape[1] // 2
    assert torch.equal(gu[3, :inter], tb["model.layers.0.mlp.experts.3.gate_proj.weight"])
    assert torch.equal(
        child["model.layers.0.mlp.experts.down_proj"][3],
        tb["model.layers.0.mlp.experts.3.down_proj.weight"],
    )
    assert torch.equal(
        child["model.layers.0.mlp.gate.weight"][3], tb["model.layers.0.mlp.gate.weight"][3]
    )


@pytest.mark.parametrize("method", ["dare_ties", "della"])
def test_same_seed_bit_identical_across_thread_counts(tmp_path, method):
    a, b = make_parent_pair("qwen3_moe", tmp_path)
    base = save_tiny(build_tiny_model("qwen3_moe", seed=5), tmp_path / "base")
    params = {"weight": 0.5, "density": 0.6}
    r = _recipe(a, b, method=method, params=params, base=str(base), seed=3)
    one = read_tensors(merge_to_disk(r, tmp_path / "t1", threads=1).out_dir)
    two = read_tensors(merge_to_disk(r, tmp_path / "t2", threads=2).out_dir)
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)
    r4 = r.model_copy(update={"seed": 4})
    other = read_tensors(merge_to_disk(r4, tmp_path / "t3", threads=2).out_dir)
    assert any(not torch.equal(one[k], other[k]) for k in one)
    # and the bytes on disk are identical too (write order does not depend on threads)
    f1 = sorted((tmp_path / "t1").glob("*.safetensors"))
    f2 = sorted((tmp_path / "t2").glob("*.safetensors"))
    assert [p.read_bytes() for p in f1] == [p.read_bytes() for p in f2]


def test_dtype_and_sharding(tmp_path, ids):
    a, b = make_parent_pair("llama", tmp_path)
    r = _recipe(a, b, params={"t": 0.0}, dtype="bfloat16")
    out = merge_to_disk(r, tmp_path / "child", max_shard_bytes=20_000).out_dir
    assert (out / "model.safetensors.index.json").exists()
    assert len(list(out.glob("*.safetensors"))) > 1
    tensors = read_tensors(out)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_many_transplants_into_a_fused_tensor_read_the_source_once(tmp_path, monkeypatch):
    """Dead-expert revival moves many experts of one layer: every one lands exactly, and
    the source's fused tensor is fetched once per output tensor, not once per expert."""
    from darwinmerge.merge import executor

    a, b = make_parent_pair("qwen3_5_moe", tmp_path, layout_a="fused", layout_b="fused")
    tb = read_tensors(b)
    calls = []
    real = executor.realize
    monkeypatch.setattr(executor, "realize", lambda f, *args: calls.append(f) or real(f, *args))
    experts = [0, 2, 3]
    r = _recipe(
        a,
        b,
        params={"t": 0.0},
        transplants=[{"layer": 1, "expert": e, "source": "mother"} for e in experts],
    )
    child = read_tensors(merge_to_disk(r, tmp_path / "child").out_dir)
    names = (
        "model.layers.1.mlp.experts.gate_up_proj",
        "model.layers.1.mlp.experts.down_proj",
        "model.layers.1.mlp.gate.weight",
    )
    for name in names:
        for e in experts:
            assert torch.equal(child[name][e], tb[name][e]), (name, e)
        assert not torch.equal(child[name][1], tb[name][1])
    # per tensor: one read of the mother as a merge input + one for all three transplants
    mother_reads = [f for f in calls if f.source == 1 and f.whole and f.whole[0] in names]
    assert len(mother_reads) == 2 * len(names)
