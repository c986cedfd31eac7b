"""A model written by CheckpointWriter loads in transformers and gives identical logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from darwinmerge.checkpoint import CheckpointReader, CheckpointWriter, copy_side_files

transformers = pytest.importorskip("transformers")


def _tiny_llama(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    donor = tmp_path / "donor"
    model.save_pretrained(donor)
    return model, donor


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sharded_output_loads_with_identical_logits(tmp_path: Path, dtype: torch.dtype) -> None:
    model, donor = _tiny_llama(tmp_path)
    out = tmp_path / "child"
    with CheckpointReader(donor) as r, CheckpointWriter(out, max_shard_bytes=16_000) as w:
        for name in r.keys():
            w.add(name, r.get(name).to(dtype))
        copied = copy_side_files(
            donor, w.tmp_dir, config_updates={"dtype": str(dtype).removeprefix("torch.")}
        )
    assert "config.json" in copied
    index = json.loads((out / "model.safetensors.index.json").read_text())
    n_shards = len(set(index["weight_map"].values()))
    assert n_shards >= 3
    state = model.state_dict()
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * dtype.itemsize for t in state.values()
    )

    child = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert child.dtype == dtype
    for name, t in child.state_dict().items():  # every weight bit for bit
        assert torch.equal(t, state[name].to(dtype)), name
    # reference: the donor loaded the same way (model.to(bf16) would also cast rotary buffers)
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(donor, dtype=dtype).eval()
    ids = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ref_model(ids).logits
        got = child(ids).logits
        orig = model(ids).logits
    assert got.dtype == dtype
    assert torch.equal(got, ref)
    assert float(ref.float().std()) > 0  # the comparison is not trivially zero == zero
    if dtype == torch.float32:
        assert torch.equal(got, orig)
    else:
        assert torch.allclose(got.float(), orig, atol=0.05)
