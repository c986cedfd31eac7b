"""Page cache of the parents' files: dropped once read when they cannot stay cached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.checkpoint import reader as reader_module
from darwinmerge.errors import CheckpointError, ConfigError
from darwinmerge.merge import MergeOptions, Recipe, merge_to_disk
from darwinmerge.merge import api as merge_api
from darwinmerge.merge.buffers import BufferPool
from darwinmerge.zoo.tiny import make_parent_pair

from .conftest import read_tensors, write_recipe
from .test_bad_input import _run

pytestmark = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise")


class _Spy:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.real = os.posix_fadvise

    def __call__(self, fd: int, offset: int, length: int, advice: int) -> None:
        self.calls.append((offset, length, advice))
        self.real(fd, offset, length, advice)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    s = _Spy()
    monkeypatch.setattr(os, "posix_fadvise", s)
    return s


def test_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge_api, "_mem_available", lambda: 1000)
    assert merge_api.page_cache_drop("drop", 1)
    assert not merge_api.page_cache_drop("keep", 10**12)
    assert merge_api.page_cache_drop("auto", 501)  # more than half of what is available
    assert not merge_api.page_cache_drop("auto", 500)
    monkeypatch.setattr(merge_api, "_mem_available", lambda: None)  # unknown: keep
    assert not merge_api.page_cache_drop("auto", 10**12)
    with pytest.raises(ConfigError, match="page_cache: 'sometimes' is not one of auto"):
        merge_api.page_cache_drop("sometimes", 1)


def test_mem_available_reads_meminfo() -> None:
    got = merge_api._mem_available()
    if Path("/proc/meminfo").exists():
        assert got is not None and got > 2**20
    else:
        assert got is None


def test_reader_drops_exactly_the_ranges_it_read(
    tmp_path: Path, spy: _Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = make_parent_pair("llama", tmp_path)
    monkeypatch.setattr(reader_module, "DROP_BATCH_BYTES", 0)  # every read drops at once
    with CheckpointReader(a, drop_cache=True, direct_reads=False) as reader:  # buffered
        name = next(n for n in reader.keys() if len(reader.shape(n)) == 2)
        info = reader._info(name)
        whole = reader.get(name)
        part = reader.get_slice(name, (slice(1, 2),))
    assert torch.equal(part, whole[1:2])
    row = info.nbytes // info.shape[0]
    assert spy.calls == [
        (info.offset, info.nbytes, os.POSIX_FADV_DONTNEED),
        (info.offset + row, row, os.POSIX_FADV_DONTNEED),
    ]
    spy.calls.clear()
    with CheckpointReader(a) as reader:  # the default keeps the cache
        reader.get(name)
    assert spy.calls == []


def test_reader_drops_in_batches_merging_ranges_that_meet(
    tmp_path: Path, spy: _Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One fadvise per small read cost milliseconds: ranges wait for a batch, and those
    that overlap or touch go out as one call; what is left goes when the reader closes."""
    a, _ = make_parent_pair("llama", tmp_path)
    with CheckpointReader(a, drop_cache=True, direct_reads=False) as reader:
        by_offset = sorted(
            (reader._info(n) for n in reader.keys() if reader._info(n).nbytes >= 64),
            key=lambda i: (str(i.file), i.offset),
        )
        names = {id(reader._info(n)): n for n in reader.keys()}
        first, second, far = by_offset[0], by_offset[1], by_offset[3]
        assert first.file == second.file == far.file
        assert first.offset + first.nbytes == second.offset  # stored back to back
        assert second.offset + second.nbytes < far.offset  # a gap before this one
        batch = 2 * first.nbytes + second.nbytes + far.nbytes  # more than what is read
        monkeypatch.setattr(reader_module, "DROP_BATCH_BYTES", batch)
        reader.get(names[id(far)])
        reader.get(names[id(second)])
        reader.get_slice(names[id(first)], (slice(0, 1),))  # inside the first tensor
        reader.get(names[id(first)])
        assert spy.calls == []  # not a batch yet
    fadv = os.POSIX_FADV_DONTNEED
    assert spy.calls == [
        (first.offset, first.nbytes + second.nbytes, fadv),
        (far.offset, far.nbytes, fadv),
    ]
    spy.calls.clear()
    monkeypatch.setattr(reader_module, "DROP_BATCH_BYTES", first.nbytes + second.nbytes)
    with CheckpointReader(a, drop_cache=True, direct_reads=False) as reader:
        reader.get(names[id(second)])
        assert spy.calls == []
        reader.get(names[id(first)])  # the batch is full: dropped now, before close
        assert spy.calls == [(first.offset, first.nbytes + second.nbytes, fadv)]
    assert len(spy.calls) == 1  # nothing left for close


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_merge_with_drop_equals_keep(
    tmp_path: Path, spy: _Spy, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    monkeypatch.setenv("DARWIN_DIRECT_READS", "1" if not direct else "0")  # not read any more
    options = MergeOptions(direct_reads=direct)
    a, b = make_parent_pair("qwen3_5_moe", tmp_path)
    recipe = Recipe.parse(
        {
            "parents": [{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
            "method": "slerp",
            "parameters": {"t": 0.3},
        }
    )
    keep = merge_to_disk(recipe, tmp_path / "keep", page_cache="keep", options=options)
    assert spy.calls == []
    drop = merge_to_disk(recipe, tmp_path / "drop", page_cache="drop", options=options)
    files = sum(r.stat().st_size for p in (a, b) for r in p.glob("*.safetensors"))
    dropped = sum(length for _, length, _ in spy.calls)
    if direct and _direct_ok(a):
        assert spy.calls == []  # nothing went through the page cache: nothing to drop
    else:
        assert {advice for _, _, advice in spy.calls} == {os.POSIX_FADV_DONTNEED}
        assert 0.9 * files < dropped <= files  # every tensor read (headers are not)
    want, got = read_tensors(keep.out_dir), read_tensors(drop.out_dir)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def _direct_ok(folder: Path) -> bool:
    """Whether this file system opens files with ``O_DIRECT`` (tmpfs does not)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        os.close(os.open(next(folder.glob("*.safetensors")), os.O_RDONLY | os.O_DIRECT))
    except OSError:
        return False
    return True


def _every_read(reader: CheckpointReader) -> dict[str, torch.Tensor]:
    """Every tensor whole, and for matrices rows at odd byte offsets (first, middle,
    last row; two rows from the middle on)."""
    got: dict[str, torch.Tensor] = {}
    for name in reader.keys():
        got[name] = reader.get(name)
        rows = reader.shape(name)[0] if reader.shape(name) else 0
        if len(reader.shape(name)) >= 2 and rows >= 3:
            for lo, hi in [(0, 1), (rows // 2, rows // 2 + 2), (rows - 1, rows)]:
                got[f"{name}[{lo}:{hi}]"] = reader.get_slice(name, (slice(lo, hi),))
    return got


def test_direct_reads_equal_buffered_reads(tmp_path: Path, spy: _Spy) -> None:
    """Reads past the page cache land the same bytes as buffered ones, for tensors and
    slices at every alignment; with a pool their buffers come back and are reused."""
    a, _ = make_parent_pair("qwen3_5_moe", tmp_path)
    with CheckpointReader(a) as reader:
        want = _every_read(reader)
    with CheckpointReader(a, drop_cache=True) as reader:
        got = _every_read(reader)
        used = [fd for fd in reader._direct_fds.values() if fd is not None]
        offsets = {reader._info(n).offset % reader_module.DIRECT_ALIGN for n in reader.keys()}
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert len(offsets) > 3  # the tensors start at many offsets inside a page
    # ... but land where torch's own allocations do (BLAS sums follow the address)
    assert all(t.data_ptr() % reader_module.TENSOR_ALIGN == 0 for t in got.values())
    assert bool(used) == _direct_ok(a)
    if used:
        assert spy.calls == []
    pool = BufferPool()
    with CheckpointReader(a, drop_cache=True) as reader:
        reader.pool = pool
        name = max(reader.keys(), key=reader.nbytes)
        first = reader.get(name)
        assert torch.equal(first, want[name])
        pool.give(first)
        del first
        again = reader.get(name)
        assert torch.equal(again, want[name])
        nbytes = reader.nbytes(name)
    assert pool.fresh >= nbytes and pool.reused >= nbytes


def test_direct_read_of_a_truncated_file_says_so(tmp_path: Path) -> None:
    a, _ = make_parent_pair("llama", tmp_path)
    with CheckpointReader(a, drop_cache=True) as reader:
        name = max(reader.keys(), key=lambda n: reader._info(n).offset)  # stored last
        info = reader._info(name)
        os.truncate(info.file, info.offset + info.nbytes // 2)
        with pytest.raises(CheckpointError, match="ends inside tensor .*truncated"):
            reader.get(name)


def test_o_direct_refused_falls_back_to_buffered_reads(
    tmp_path: Path, spy: _Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = make_parent_pair("llama", tmp_path)
    with CheckpointReader(a) as reader:
        want = _every_read(reader)
    real_open = os.open

    def no_direct(path: object, flags: int, *args: object) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")  # as tmpfs answers
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_direct)
    with CheckpointReader(a, drop_cache=True) as reader:
        got = _every_read(reader)
        assert all(fd is None for fd in reader._direct_fds.values())
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert spy.calls and {advice for _, _, advice in spy.calls} == {os.POSIX_FADV_DONTNEED}


def test_cli_refuses_an_unknown_mode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = make_parent_pair("llama", tmp_path)
    cfg = write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
        method="linear",
        parameters={"weight": 0.5},
    )
    assert _run(["merge", str(cfg), str(tmp_path / "out"), "--page-cache", "x"]) == 1
    err = capsys.readouterr().err
    assert "--page-cache 'x': expected one of auto, keep, drop" in err, err
    assert not (tmp_path / "out").exists()
