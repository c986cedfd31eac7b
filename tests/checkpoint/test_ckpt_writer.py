"""CheckpointWriter: byte sharding, index, atomic commit / abort, bounded buffer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from darwinmerge.checkpoint import CheckpointReader, CheckpointWriter
from darwinmerge.errors import CheckpointError, OutputExistsError

from .ckpt_builders import tiny_tensors


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_single_shard_round_trip(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    out = tmp_path / "out"
    with CheckpointWriter(out) as w:
        for name, t in tensors.items():
            w.add(name, t)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    with CheckpointReader(out) as r:
        assert set(r.keys()) == set(tensors)
        for name, t in tensors.items():
            got = r.get(name)
            assert got.dtype == t.dtype and torch.equal(got, t)
    assert _leftovers(tmp_path) == []


def test_sharded_round_trip_and_index(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    src = {f"layers.{i}.w": torch.randn(10, 10, generator=g) for i in range(7)}  # 400 B each
    src["big"] = torch.randn(300, generator=g).to(torch.bfloat16)  # 600 B
    src["tail"] = torch.randn(5, generator=g)
    w = CheckpointWriter(tmp_path / "out", max_shard_bytes=1000, metadata={"merge": "slerp"})
    for name, t in src.items():
        w.add(name, t)
    out = w.commit()
    files = sorted(p.name for p in out.glob("*.safetensors"))
    n = len(files)
    assert files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    # greedy: (w0 w1) (w2 w3) (w4 w5) (w6 + big = exactly 1000 B) (tail)
    assert n == 5
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["layers.6.w"] == index["weight_map"]["big"] == files[3]
    assert index["weight_map"]["tail"] == files[4]
    assert index["metadata"]["total_size"] == sum(_nbytes(t) for t in src.values()) == 3420
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in src.values())
    assert list(index["weight_map"]) == list(src)
    for fname in files:
        with safe_open(str(out / fname), framework="pt") as f:
            assert f.metadata() == {"merge": "slerp", "format": "pt"}
            assert sum(_nbytes(f.get_tensor(k)) for k in f.keys()) <= 1000
            for k in f.keys():
                assert index["weight_map"][k] == fname
    with CheckpointReader(out) as r:
        assert r.keys() == list(src)
        for name, t in src.items():
            assert torch.equal(r.get(name), t)


def test_oversized_tensor_gets_own_shard(tmp_path: Path) -> None:
    with CheckpointWriter(tmp_path / "out", max_shard_bytes=100) as w:
        w.add("a", torch.ones(10))  # 40 B
        w.add("huge", torch.ones(100))  # 400 B > limit
        w.add("b", torch.ones(10))
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {
        "a": "model-00001-of-00003.safetensors",
        "huge": "model-00002-of-00003.safetensors",
        "b": "model-00003-of-00003.safetensors",
    }


def test_buffer_never_exceeds_limit(tmp_path: Path) -> None:
    """Instrumented: after every add the buffer holds at most max_shard_bytes."""
    limit = 4096
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 700, (200,), generator=g).tolist()
    w = CheckpointWriter(tmp_path / "out", max_shard_bytes=limit)
    seen = []
    for i, s in enumerate(sizes):
        w.add(f"t{i}", torch.randn(s, generator=g))
        seen.append(w.buffer_bytes)
        assert w.buffer_bytes <= limit
    assert w.peak_buffer_bytes == max(seen) <= limit
    assert w.peak_buffer_bytes > limit - 700 * 4  # the buffer really fills up before flushing
    w.commit()
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 4 * sum(sizes)
    # a flush happens only when the next tensor would not fit: greedy packing
    n = len(list((tmp_path / "out").glob("*.safetensors")))
    assert n <= 2 * (4 * sum(sizes)) // limit + 1


def test_add_snapshots_views_and_shared_storage(tmp_path: Path) -> None:
    base = torch.arange(24.0).reshape(4, 6)
    view = base[:, 1:3]  # non-contiguous view
    row = base[1]  # contiguous view of a larger storage
    with CheckpointWriter(tmp_path / "out") as w:
        w.add("view", view)
        w.add("row", row)
        w.add("tied.a", base)
        w.add("tied.b", base)  # same tensor twice (tied weights)
        expected = base.clone()
        base.zero_()  # caller reuses its buffer after add
    with CheckpointReader(tmp_path / "out") as r:
        assert torch.equal(r.get("view"), expected[:, 1:3])
        assert torch.equal(r.get("row"), expected[1])
        assert torch.equal(r.get("tied.a"), expected) and torch.equal(r.get("tied.b"), expected)


def test_duplicate_name_refused(tmp_path: Path) -> None:
    w = CheckpointWriter(tmp_path / "out")
    w.add("a", torch.ones(2))
    with pytest.raises(CheckpointError, match=r"out: tensor 'a' was added twice"):
        w.add("a", torch.ones(2))
    w.abort()
    assert _leftovers(tmp_path) == [] and not (tmp_path / "out").exists()


def test_existing_out_dir_refused_then_forced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match=r"out: already exists.*--force"):
        CheckpointWriter(out)
    assert _leftovers(tmp_path) == []
    with CheckpointWriter(out, force=True) as w:
        w.add("x", torch.ones(3))
        (w.tmp_dir / "note.txt").write_text("side file")
        assert (out / "old.txt").exists()  # untouched until commit
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "note.txt"]
    assert _leftovers(tmp_path) == []


def test_exception_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with CheckpointWriter(out, max_shard_bytes=8) as w:
            w.add("a", torch.ones(4))
            w.add("b", torch.ones(4))  # forces a shard file on disk
            assert any(w.tmp_dir.iterdir())
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_exception_with_force_keeps_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with CheckpointWriter(out) as w:
        w.add("old", torch.ones(2))
    with pytest.raises(ValueError):
        with CheckpointWriter(out, force=True) as w:
            w.add("new", torch.ones(2))
            raise ValueError
    with CheckpointReader(out) as r:
        assert r.keys() == ["old"]
    assert _leftovers(tmp_path) == []


def test_empty_commit_and_use_after_commit(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no tensors were added"):
        with CheckpointWriter(tmp_path / "out"):
            pass
    assert list(tmp_path.iterdir()) == []
    w = CheckpointWriter(tmp_path / "out")
    w.add("a", torch.ones(1))
    w.commit()
    with pytest.raises(CheckpointError, match="already committed"):
        w.add("b", torch.ones(1))


def test_writer_copies_reader_sharded_bit_exact(tmp_path: Path) -> None:
    src = tiny_tensors(seed=5)
    with CheckpointWriter(tmp_path / "a", max_shard_bytes=300) as w:
        for k, t in src.items():
            w.add(k, t)
    with (
        CheckpointReader(tmp_path / "a") as r,
        CheckpointWriter(tmp_path / "b", max_shard_bytes=10**9) as w2,
    ):
        assert len(r.files) > 2
        for k in r.keys():
            w2.add(k, r.get(k))
    with CheckpointReader(tmp_path / "b") as r2:  # one file: data-offset order
        assert sorted(r2.keys()) == sorted(src)
        for k, t in src.items():
            assert torch.equal(r2.get(k), t)


@pytest.mark.parametrize("direct_io", [True, False])
def test_planned_writes_go_straight_to_disk(tmp_path: Path, monkeypatch, direct_io: bool) -> None:
    """plan() + add(): same tensors as buffered mode, no buffer, data 4 KiB aligned,
    order and completeness checked; a tiny bounce buffer forces many direct flushes."""
    from darwinmerge.checkpoint import CheckpointReader, shard_file

    monkeypatch.setattr(shard_file, "_BOUNCE_BYTES", 2 * 4096 + 100)
    gen = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(64, 32 + i, generator=gen).to(torch.bfloat16) for i in range(6)}
    tensors["flag"] = torch.tensor([True, False])
    entries = [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    with CheckpointWriter(
        tmp_path / "planned", max_shard_bytes=3 * 64 * 32 * 2, direct_io=direct_io
    ) as w:
        w.plan(entries)
        for k, v in tensors.items():
            w.add(k, v)
        assert w.peak_buffer_bytes == 0
    with CheckpointWriter(tmp_path / "buffered", max_shard_bytes=3 * 64 * 32 * 2) as w:
        for k, v in tensors.items():
            w.add(k, v)
    planned = sorted(p.name for p in (tmp_path / "planned").iterdir())
    assert planned == sorted(p.name for p in (tmp_path / "buffered").iterdir())
    assert len([p for p in planned if p.endswith(".safetensors")]) >= 3
    for shard in (tmp_path / "planned").glob("*.safetensors"):
        head = int.from_bytes(shard.read_bytes()[:8], "little")
        assert (8 + head) % 4096 == 0  # data starts on a 4 KiB boundary
        with safe_open(str(shard), "pt") as fh:  # and safetensors itself reads it
            assert all(torch.equal(fh.get_tensor(k), tensors[k]) for k in fh.keys())
    with CheckpointReader(tmp_path / "planned") as r:
        assert r.keys() == list(tensors)
        for k, v in tensors.items():
            assert torch.equal(r.get(k), v)

    with pytest.raises(CheckpointError, match="expected tensor 't0'"):
        with CheckpointWriter(tmp_path / "wrong") as w:
            w.plan(entries)
            w.add("t1", tensors["t1"])
    with pytest.raises(CheckpointError, match="never added"):
        with CheckpointWriter(tmp_path / "short") as w:
            w.plan(entries)
            w.add("t0", tensors["t0"])
    assert not (tmp_path / "wrong").exists() and not (tmp_path / "short").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
