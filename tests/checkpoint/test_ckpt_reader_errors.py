"""Every bad checkpoint is refused at open with a CheckpointError that names the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.errors import CheckpointError

from .ckpt_builders import write_sharded


def _index(d: Path) -> dict:
    return json.loads((d / "model.safetensors.index.json").read_text())


def _write_index(d: Path, index: dict) -> None:
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope: no such file or directory"):
        CheckpointReader(tmp_path / "nope")


def test_no_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=rf"{tmp_path}: no weights found"):
        CheckpointReader(tmp_path)


def test_index_names_missing_shard(sharded_dir: Path) -> None:
    (sharded_dir / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"index.json: names shard 'model-00002-of-00003"):
        CheckpointReader(sharded_dir)


@pytest.mark.parametrize("bad", ["../outside.safetensors", "sub/../../outside.safetensors", "ABS"])
def test_index_shard_outside_model_dir(
    tmp_path: Path, tensors: dict[str, torch.Tensor], bad: str
) -> None:
    outside = tmp_path / "outside.safetensors"
    save_file({"scale": tensors["scale"]}, str(outside))
    d = tmp_path / "m"
    write_sharded(d, tensors, [list(tensors)])
    index = _index(d)
    index["weight_map"]["scale"] = str(outside) if bad == "ABS" else bad
    _write_index(d, index)
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json: shard .* outside"):
        CheckpointReader(d)


def test_index_shard_symlink_escaping(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    d = tmp_path / "m"
    write_sharded(d, tensors, [list(tensors)])
    elsewhere = tmp_path / "elsewhere.safetensors"
    (d / "model-00001-of-00001.safetensors").rename(elsewhere)
    os.symlink(elsewhere, d / "model-00001-of-00001.safetensors")
    with pytest.raises(CheckpointError, match=r"resolves to .*elsewhere.safetensors, outside"):
        CheckpointReader(d)


def test_hub_cache_symlinks_into_blobs_are_allowed(
    tmp_path: Path, tensors: dict[str, torch.Tensor]
) -> None:
    repo = tmp_path / "models--org--name"
    snap = repo / "snapshots" / "abc123"
    write_sharded(snap, tensors, [list(tensors)[:3], list(tensors)[3:]])
    (repo / "blobs").mkdir()
    for shard in sorted(snap.glob("*.safetensors")):
        blob = repo / "blobs" / f"blob-{shard.name}"
        shard.rename(blob)
        os.symlink(Path("../../blobs") / blob.name, shard)
    with CheckpointReader(snap) as r:
        assert torch.equal(r.get("scale"), tensors["scale"])


def test_truncated_data(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    f = tmp_path / "model.safetensors"
    save_file(tensors, str(f))
    os.truncate(f, f.stat().st_size - 5)
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor .* ends at data offset"):
        CheckpointReader(tmp_path)


def test_truncated_header(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    f = tmp_path / "model.safetensors"
    save_file(tensors, str(f))
    os.truncate(f, 40)
    with pytest.raises(CheckpointError, match=r"model.safetensors: header length \d+ runs past"):
        CheckpointReader(tmp_path)
    os.truncate(f, 3)
    with pytest.raises(CheckpointError, match=r"model.safetensors: file is 3 bytes"):
        CheckpointReader(tmp_path)


def test_corrupt_header_json(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    f = tmp_path / "model.safetensors"
    save_file(tensors, str(f))
    raw = bytearray(f.read_bytes())
    raw[8:12] = b"\xff\xfe!!"
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model.safetensors: header is not valid JSON"):
        CheckpointReader(tmp_path)


def test_header_size_mismatch(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(f))
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + n].replace(b"[4,4]", b"[4,5]")
    f.write_bytes(raw[:8] + header + raw[8 + n :])
    with pytest.raises(CheckpointError, match=r"'w' spans 64 bytes but shape \[4, 5\]"):
        CheckpointReader(tmp_path)


def test_index_maps_tensor_to_wrong_shard(sharded_dir: Path) -> None:
    index = _index(sharded_dir)
    index["weight_map"]["scale"] = "model-00001-of-00003.safetensors"
    _write_index(sharded_dir, index)
    with pytest.raises(CheckpointError, match=r"index.json: maps tensor 'scale' to model-00001"):
        CheckpointReader(sharded_dir)


def test_index_misses_a_tensor(sharded_dir: Path) -> None:
    index = _index(sharded_dir)
    del index["weight_map"]["scale"]
    _write_index(sharded_dir, index)
    with pytest.raises(CheckpointError, match=r"index.json: does not list tensor 'scale'"):
        CheckpointReader(sharded_dir)


def test_index_lists_unknown_tensor(sharded_dir: Path) -> None:
    index = _index(sharded_dir)
    index["weight_map"]["ghost"] = "model-00001-of-00003.safetensors"
    _write_index(sharded_dir, index)
    with pytest.raises(CheckpointError, match=r"index.json: maps tensor 'ghost'"):
        CheckpointReader(sharded_dir)


def test_index_duplicate_json_key(sharded_dir: Path) -> None:
    text = (sharded_dir / "model.safetensors.index.json").read_text()
    text = text.replace('"scale": ', '"scale": "model-00001-of-00003.safetensors", "scale": ')
    (sharded_dir / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"index.json: cannot parse .*'scale' appears twice"):
        CheckpointReader(sharded_dir)


def test_tensor_in_two_shards(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    names = list(tensors)
    write_sharded(tmp_path / "m", tensors, [names[:4], names[3:]])  # names[3] in both
    with pytest.raises(CheckpointError, match=rf"00002-of-00002.safetensors: tensor '{names[3]}'"):
        CheckpointReader(tmp_path / "m")
    save_file({"x": tensors["scale"]}, str(tmp_path / "a.safetensors"))
    save_file({"x": tensors["scale"]}, str(tmp_path / "b.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"b.safetensors: tensor 'x' is also in a.safetensors"
    ):
        CheckpointReader(tmp_path)


def test_bad_config_json(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: is not valid JSON"):
        CheckpointReader(tmp_path)
