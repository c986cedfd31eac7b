"""Recycled buffers of a merge to disk: reused by size, never a parent's, same child."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

from darwinmerge.merge import Recipe, execute_plan, executor, plan_merge
from darwinmerge.merge.api import open_sources
from darwinmerge.merge.buffers import BufferPool
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny


def test_take_reuses_a_returned_buffer_by_size() -> None:
    pool = BufferPool()
    a = pool.take(1000).view(torch.int16)
    where = a.data_ptr()
    pool.give(a[:10])  # any view returns the whole buffer
    assert pool.idle == 1000
    pool.give(a)  # twice: counted once
    assert pool.idle == 1000
    del a
    b = pool.take(900)  # at most 1/8 smaller than the buffer: served from it
    assert b.data_ptr() == where and b.numel() == 900 and pool.idle == 0
    pool.give(b)
    c = pool.take(800)  # more than 1/8 smaller: a fresh buffer
    assert c.data_ptr() != where and pool.idle == 1000
    assert pool.reused == 900 and pool.fresh == 1800


def test_only_its_own_buffers_come_back_and_idle_is_bounded() -> None:
    pool = BufferPool(max_idle=1500)
    pool.give(torch.empty(1000, dtype=torch.uint8))  # not the pool's: ignored
    assert pool.idle == 0
    a, b = pool.take(1000), pool.take(1000)
    pool.give(a, b, None)
    assert pool.idle == 1000  # the second would exceed max_idle: left to the caller
    small = pool.take(100)
    pool.give(small)
    assert pool.fits(1000) == 1000 and pool.fits(95) == 100 and pool.fits(50) == 0
    assert pool.reusable([1000, 990, 95]) == {1000: 1, 100: 1}
    pool.evict(1, spare={1000: 1})  # the largest goes first, but not the spared one
    assert pool.idle == 1000
    pool.give(pool.take(100))
    pool.evict(1)  # the largest goes first
    assert pool.idle == 100
    pool.clear()
    assert pool.idle == 0


def test_idle_buffers_no_later_job_wants_are_freed() -> None:
    """After the embedding's jobs, their 0.95 GiB buffers fit no expert tensor: the pool
    frees the large idle buffers no wanted size would reuse, and keeps the rest."""
    pool = BufferPool()
    bufs = [pool.take(n) for n in (970, 970, 1024, 512, 40, 16)]
    pool.give(*bufs)
    assert pool.idle == 970 * 2 + 1024 + 512 + 40 + 16
    pool.drop_unwanted({1000, 512}, above=64)  # 1024 serves 1000 (<= 1/8 more); 970 serves none
    assert pool.fits(1000) == 1024 and pool.fits(512) == 512
    assert pool.fits(970) == 1024  # the two 970s are freed: only the 1024 would serve
    assert pool.fits(40) == 40 and pool.fits(16) == 16  # small ones serve any job's blocks
    assert pool.idle == 1024 + 512 + 40 + 16
    pool.drop_unwanted(set(), above=64)
    assert pool.idle == 40 + 16
    again = pool.take(1024)  # a freed buffer is never handed out again
    assert pool.fresh == 970 * 2 + 1024 * 2 + 512 + 40 + 16
    pool.give(again)
    assert pool.idle == 40 + 16 + 1024


@pytest.mark.parametrize("block", [None, 2048])  # expert tensors whole / in blocks
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("method", ["ties", "linear"])
def test_merge_with_recycled_buffers_equals_one_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int, method: str, block: int | None
) -> None:
    if block is not None:
        monkeypatch.setattr(executor, "BLOCK_BYTES", block)
    paths = []
    for seed, layout in ((0, "fused"), (1, "per_expert"), (2, "fused")):
        model = build_tiny_model("qwen3_5_moe", seed=seed)
        paths.append(save_tiny(model, tmp_path / f"m{seed}", layout=layout))
    params = {"weight": 0.5, "density": 0.5} if method == "ties" else {"weight": 0.5}
    recipe = Recipe.parse(
        {
            "parents": [{"name": "a", "path": str(paths[0])}, {"name": "b", "path": str(paths[1])}],
            "method": method,
            "parameters": params,
            **({"base": str(paths[2])} if method == "ties" else {}),
        }
    )

    def run(pool: BufferPool | None) -> dict[str, torch.Tensor]:
        got: dict[str, torch.Tensor] = {}
        with ExitStack() as stack:
            sources = open_sources(recipe, stack)
            for s in sources:
                s.pool = pool
            plan = plan_merge(recipe, sources)
            # the sink copies: what it was handed may be reused once it returns
            execute_plan(
                plan, sources, lambda n, t: got.__setitem__(n, t.clone()),
                threads=threads, buffers=pool,
            )  # fmt: skip
        return got

    want = run(None)
    pool = BufferPool()
    got = run(pool)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert pool.reused > 0  # the layers' repeated shapes did reuse buffers
    if block is not None:  # blocks were gathered from the per-expert parent
        assert any(executor.job_blocks(j) for j in plan_of(recipe))


def plan_of(recipe: Recipe) -> list:
    with ExitStack() as stack:
        return plan_merge(recipe, open_sources(recipe, stack)).jobs


def test_a_job_that_runs_alone_uses_every_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The largest job takes the whole budget, so it runs alone: its inputs are read side
    by side and its mix pass split over the merge's threads; the child is the same."""
    import threading

    from darwinmerge.merge.kernels import fused, streamed

    if not fused.AVAILABLE:
        pytest.skip("Numba missing")

    monkeypatch.setattr(fused, "PARALLEL_MIN", 1)
    monkeypatch.setattr(streamed, "CHUNK", 256)  # plans of many chunks to split
    paths = [save_tiny(build_tiny_model("llama", seed=s), tmp_path / f"m{s}") for s in range(3)]
    recipe = Recipe.parse(
        {
            "parents": [{"name": "a", "path": str(paths[0])}, {"name": "b", "path": str(paths[1])}],
            "method": "ties",
            "parameters": {"weight": 0.5, "density": 0.5},
            "base": str(paths[2]),
        }
    )
    names: set[str] = set()
    real = fused._mix

    def spy(*args: object) -> None:
        names.add(threading.current_thread().name.split("_")[0])
        real(*args)

    monkeypatch.setattr(fused, "_mix", spy)

    def run(threads: int) -> dict[str, torch.Tensor]:
        got: dict[str, torch.Tensor] = {}
        with ExitStack() as stack:
            sources = open_sources(recipe, stack)
            plan = plan_merge(recipe, sources)
            execute_plan(plan, sources, lambda n, t: got.__setitem__(n, t.clone()), threads=threads)
        return got

    one = run(1)
    assert "darwin-mix" not in names
    two = run(2)
    assert "darwin-mix" in names  # the alone job's mix ran on the split threads
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_the_jobs_that_run_alone_go_first_in_plan_order(tmp_path: Path) -> None:
    paths = [save_tiny(build_tiny_model("qwen3_5_moe", seed=s), tmp_path / f"m{s}") for s in (0, 1)]
    recipe = Recipe.parse(
        {
            "parents": [{"name": "a", "path": str(paths[0])}, {"name": "b", "path": str(paths[1])}],
            "method": "linear",
            "parameters": {"weight": 0.5},
        }
    )
    jobs = plan_of(recipe)
    ordered = executor.alone_first(jobs)
    assert sorted(j.name for j in ordered) == sorted(j.name for j in jobs)
    most = max(executor.job_memory(j) for j in jobs)
    big = [j.name for j in jobs if executor.job_memory(j) == most]
    assert [j.name for j in ordered[: len(big)]] == big
    rest = [j.name for j in jobs if j.name not in big]
    assert [j.name for j in ordered[len(big) :]] == rest
