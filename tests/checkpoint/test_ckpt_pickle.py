"""Pickle checkpoints: refused by default, loaded weights-only when allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.errors import CheckpointError


def test_pickle_refused_by_default(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: is a pickle .*--allow-pickle"):
        CheckpointReader(tmp_path)


def test_pickle_loaded_when_allowed(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    with CheckpointReader(tmp_path, allow_pickle=True) as r:
        assert r.kind == "pickle"
        assert r.keys() == list(tensors)
        for name, t in tensors.items():
            assert r.dtype(name) == t.dtype and r.shape(name) == tuple(t.shape)
            assert torch.equal(r.get(name), t)
        experts = tensors["layers.0.mlp.experts.gate_up"]
        got = r.get_slice("layers.0.mlp.experts.gate_up", (2, slice(1, 3)))
        assert torch.equal(got, experts[2, 1:3])
        r.get("embed.weight").zero_()  # caller owns the result
        assert torch.equal(r.get("embed.weight"), tensors["embed.weight"])


def test_sharded_pickle_index(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    names = list(tensors)
    torch.save({k: tensors[k] for k in names[:4]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({k: tensors[k] for k in names[4:]}, tmp_path / "pytorch_model-00002-of-00002.bin")
    wm = {k: f"pytorch_model-0000{1 if i < 4 else 2}-of-00002.bin" for i, k in enumerate(names)}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.index.json: is a pickle"):
        CheckpointReader(tmp_path)
    with CheckpointReader(tmp_path, allow_pickle=True) as r:
        assert r.keys() == names
        assert r.file_of("scale").name == "pytorch_model-00002-of-00002.bin"
        assert torch.equal(r.get("scale"), tensors["scale"])


def test_pt_file_with_state_dict_wrapper(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    torch.save({"state_dict": tensors, "step": 3}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="weights.pt: is a pickle"):
        CheckpointReader(tmp_path / "weights.pt")
    with CheckpointReader(tmp_path, allow_pickle=True) as r:
        assert set(r.keys()) == set(tensors)


class Payload:
    """Any class: weights-only unpickling refuses to build it."""


def test_pickle_with_code_is_rejected_even_when_allowed(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2), "obj": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: cannot load as a weights-only"):
        CheckpointReader(tmp_path, allow_pickle=True)


def test_safetensors_preferred_over_pickle(
    tmp_path: Path, tensors: dict[str, torch.Tensor]
) -> None:
    from safetensors.torch import save_file

    save_file({"s": tensors["scale"]}, str(tmp_path / "model.safetensors"))
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    with CheckpointReader(tmp_path) as r:
        assert r.kind == "safetensors" and r.keys() == ["s"]
