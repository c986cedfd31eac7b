"""CheckpointReader: lazy reads from single-file, multi-file and sharded checkpoints."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.errors import CheckpointError


def test_single_file_round_trip(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    d = tmp_path / "m"
    d.mkdir()
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with CheckpointReader(d) as r:
        assert r.path == d
        assert r.config == {"model_type": "llama", "hidden_size": 8}
        assert sorted(r.keys()) == sorted(tensors)
        assert len(r) == len(tensors)
        for name, t in tensors.items():
            assert name in r
            assert r.shape(name) == tuple(t.shape)
            assert r.dtype(name) == t.dtype
            assert r.nbytes(name) == t.numel() * t.element_size()
            got = r.get(name)
            assert got.dtype == t.dtype and torch.equal(got, t)
        assert "missing" not in r
        assert r.total_bytes() == sum(t.numel() * t.element_size() for t in tensors.values())


def test_file_path_opens_that_file_only(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({"a": tensors["embed.weight"]}, str(tmp_path / "one.safetensors"))
    save_file({"b": tensors["scale"]}, str(tmp_path / "two.safetensors"))
    with CheckpointReader(tmp_path / "one.safetensors") as r:
        assert r.path == tmp_path and r.keys() == ["a"] and r.config == {}


def test_sharded_index_order_and_values(
    sharded_dir: Path, tensors: dict[str, torch.Tensor]
) -> None:
    with CheckpointReader(sharded_dir) as r:
        assert r.keys() == list(tensors)  # index order
        assert [p.name for p in r.files] == [
            f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
        ]
        assert r.file_of("scale").name == "model-00003-of-00003.safetensors"
        for name, t in tensors.items():
            assert torch.equal(r.get(name), t)


def test_multi_file_without_index(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    names = list(tensors)
    save_file({k: tensors[k] for k in names[4:]}, str(tmp_path / "b.safetensors"))
    save_file({k: tensors[k] for k in names[:4]}, str(tmp_path / "a.safetensors"))
    with CheckpointReader(tmp_path) as r:
        assert set(r.keys()) == set(names)
        assert set(r.keys()[:4]) == set(names[:4])  # file a.safetensors first
        assert torch.equal(r.get("position_ids"), tensors["position_ids"])


def test_get_slice_matches_full_tensor(sharded_dir: Path, tensors: dict[str, torch.Tensor]) -> None:
    experts = tensors["layers.0.mlp.experts.gate_up"]  # [4, 6, 8] fp16
    embed = tensors["embed.weight"]
    with CheckpointReader(sharded_dir) as r:
        for e in range(4):
            got = r.get_slice("layers.0.mlp.experts.gate_up", (e, slice(1, 4)))
            assert got.shape == (3, 8) and torch.equal(got, experts[e, 1:4])
        assert torch.equal(r.get_slice("layers.0.mlp.experts.gate_up", (-1,)), experts[-1])
        assert torch.equal(r.get_slice("layers.0.mlp.experts.gate_up", 2), experts[2])
        assert torch.equal(
            r.get_slice("embed.weight", (slice(3, 11, 2), slice(0, 5))), embed[3:11:2, :5]
        )
        assert torch.equal(r.get_slice("scale", ()), tensors["scale"])
        with pytest.raises(IndexError, match="embed.weight"):
            r.get_slice("embed.weight", (16,))
        with pytest.raises(IndexError, match="step"):
            r.get_slice("embed.weight", (slice(None, None, -1),))
        with pytest.raises(IndexError, match="2 dims"):
            r.get_slice("embed.weight", (0, 0, 0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_float_dtypes_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    t = (torch.randn(33, 7, generator=torch.Generator().manual_seed(1)) * 1e3).to(dtype)
    save_file({"w": t}, str(tmp_path / "model.safetensors"))
    with CheckpointReader(tmp_path) as r:
        got = r.get("w")
        assert got.dtype == dtype
        as_int = torch.int16 if dtype.itemsize == 2 else torch.int32
        assert torch.equal(got.view(as_int), t.view(as_int))  # bit for bit


def test_many_gets_reuse_one_handle_and_threads(
    sharded_dir: Path, tensors: dict[str, torch.Tensor]
) -> None:
    with CheckpointReader(sharded_dir) as r:
        for _ in range(2000):
            r.get("scale")
        assert len(r._fds) == 1  # opened lazily, once, and reused
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(50):
                    for name, t in tensors.items():
                        assert torch.equal(r.get(name), t)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert len(r._fds) == 3


def test_get_returns_owned_tensor(sharded_dir: Path, tensors: dict[str, torch.Tensor]) -> None:
    with CheckpointReader(sharded_dir) as r:
        a = r.get("embed.weight")
        a.zero_()
        r.get_slice("embed.weight", (slice(0, 4),)).fill_(3.0)
        assert torch.equal(r.get("embed.weight"), tensors["embed.weight"])
        # positional reads give a fresh tensor even with copy=False: nothing is shared
        r.get("embed.weight", copy=False).zero_()
        assert torch.equal(r.get("embed.weight"), tensors["embed.weight"])
        # a slice that is not one contiguous byte range takes the safe_open path, still owned
        cols = r.get_slice("embed.weight", (slice(0, 4), slice(1, 3)))
        assert torch.equal(cols, tensors["embed.weight"][0:4, 1:3])
    with CheckpointReader(sharded_dir) as fresh:  # the file itself never changes
        assert torch.equal(fresh.get("embed.weight"), tensors["embed.weight"])


def test_unknown_tensor_and_closed_reader(sharded_dir: Path) -> None:
    r = CheckpointReader(sharded_dir)
    with pytest.raises(CheckpointError, match="did you mean 'embed.weight'"):
        r.get("embed.weights")
    r.close()
    with pytest.raises(CheckpointError, match="closed"):
        r.get("scale")


def test_positional_slices_equal_tensor_indexing(tmp_path: Path) -> None:
    """Every index form (ints, unit-step slices, steps, trailing slices) reads what
    indexing the full tensor gives, through the contiguous fast path or the fallback."""
    from safetensors.torch import save_file

    full = torch.arange(4 * 6 * 5, dtype=torch.float32).reshape(4, 6, 5)
    save_file({"x": full.to(torch.bfloat16)}, str(tmp_path / "model.safetensors"))
    want = full.to(torch.bfloat16)
    cases = [
        (),
        (2,),
        (-1,),
        (1, 3),
        (1, slice(2, 5)),
        (slice(1, 3),),
        (slice(None),),
        (3, slice(0, 6), slice(0, 5)),
        (slice(0, 2), slice(1, 2)),
        (0, slice(0, 6, 2)),
        (2, 4, slice(1, 4)),
        (slice(3, 3),),
    ]
    with CheckpointReader(tmp_path) as r:
        for idx in cases:
            got = r.get_slice("x", idx)
            assert got.dtype == torch.bfloat16
            assert torch.equal(got, want[idx]), idx
