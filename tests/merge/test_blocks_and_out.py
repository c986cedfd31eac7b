"""Expert tensors merged a block of experts at a time, and merges written straight into a
resident child's storage (``out=``): same numbers as the whole-tensor, fresh-tensor path."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

from darwinmerge.checkpoint import CheckpointReader
from darwinmerge.merge import Recipe, StateDictSource, execute_plan, plan_merge
from darwinmerge.merge import executor as ex
from darwinmerge.merge.ops import apply_method
from darwinmerge.merge.ops.interpolation import linear, slerp
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

_FAMILY = "qwen3_5_moe"


class _Spy:
    """A TensorSource that remembers the largest tensor it handed out."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.config = inner.config
        self.largest = 0

    def keys(self) -> list[str]:
        return list(self.inner.keys())

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.inner.shape(name))

    def dtype(self, name: str) -> torch.dtype:
        return self.inner.dtype(name)

    def _seen(self, t: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, t.numel())
        return t

    def get(self, name: str) -> torch.Tensor:
        return self._seen(self.inner.get(name))

    def get_slice(self, name: str, index):  # type: ignore[no-untyped-def]
        return self._seen(self.inner.get_slice(name, index))


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    """Father resident and fused; mother and base on disk, one tensor per expert."""
    root: Path = tmp_path_factory.mktemp("blocks")
    father = build_tiny_model(_FAMILY, seed=0)
    mother = save_tiny(build_tiny_model(_FAMILY, seed=1), root / "mother", layout="per_expert")
    base = save_tiny(build_tiny_model(_FAMILY, seed=2), root / "base", layout="per_expert")
    with ExitStack() as stack:
        yield [
            StateDictSource.from_model(father),
            stack.enter_context(CheckpointReader(mother)),
            stack.enter_context(CheckpointReader(base)),
        ]


def _recipe(method: str, parameters: dict, seed: int = 0) -> Recipe:
    return Recipe.parse(
        {
            "parents": [{"name": "father", "path": "/f"}, {"name": "mother", "path": "/m"}],
            "base": "/b",
            "method": method,
            "parameters": parameters,
            "seed": seed,
        }
    )


def _merged(plan, sources, threads: int = 1) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    out: dict[str, torch.Tensor] = {}
    execute_plan(plan, sources, out.__setitem__, threads=threads)
    return out


DETERMINISTIC = {
    "linear": {"weight": 0.4},
    "slerp": {"t": 0.3},
    "ties": {"weight": 0.5, "density": 0.4},
    "task_arithmetic": {"weight": 0.7},
    "breadcrumbs_ties": {"weight": 0.5, "density": 0.6, "gamma": 0.05},
    "trimmed_task_lerp": {"t": 0.6, "density": 0.5},
}


@pytest.mark.parametrize("method", sorted(DETERMINISTIC))
def test_blocked_expert_tensors_equal_the_whole_tensor_merge(parents, monkeypatch, method):
    recipe = _recipe(method, DETERMINISTIC[method])
    if method in ("linear", "slerp"):
        recipe = recipe.model_copy(update={"base": None})
        parents = parents[:2]
    plan = plan_merge(recipe, parents)
    monkeypatch.setattr(ex, "BLOCK_BYTES", 1 << 40)
    assert all(ex.job_blocks(j) is None for j in plan.jobs)
    whole = _merged(plan, parents)
    # one expert of gate_up (32 x 32 float32 = 4 KiB) per block; down: two experts
    monkeypatch.setattr(ex, "BLOCK_BYTES", 4096)
    gate_up = next(j for j in plan.jobs if j.name.endswith("layers.0.mlp.experts.gate_up_proj"))
    down = next(j for j in plan.jobs if j.name.endswith("layers.0.mlp.experts.down_proj"))
    assert ex.job_blocks(gate_up) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert ex.job_blocks(down) == [(0, 2), (2, 4)]
    blocked = _merged(plan, parents)
    assert blocked.keys() == whole.keys()
    for name, t in whole.items():
        assert t.dtype == blocked[name].dtype and torch.equal(t, blocked[name]), name


def test_blocked_reads_never_hold_a_whole_expert_tensor(parents, monkeypatch):
    """Reads of expert jobs are one block each: the largest read among expert jobs is
    one expert (gate_up) while the unblocked merge reads the whole fused tensor."""
    plan = plan_merge(_recipe("ties", {"weight": 0.5, "density": 0.5}), parents)
    experts = [j for j in plan.jobs if j.role.component == "experts"]
    sizes = {}
    for budget in (1 << 40, 4096):
        monkeypatch.setattr(ex, "BLOCK_BYTES", budget)
        spies = [_Spy(s) for s in parents]
        for job in experts:
            ex.run_job(job, spies, seed=0)
        sizes[budget] = max(s.largest for s in spies)
    gate_up = experts[0].shape
    assert sizes[1 << 40] == gate_up[0] * gate_up[1] * gate_up[2]
    assert sizes[4096] == gate_up[1] * gate_up[2]


def test_random_methods_draw_each_block_from_its_own_seeded_generator(parents, monkeypatch):
    recipe = _recipe("dare_ties", {"weight": 0.5, "density": 0.6}, seed=7)
    plan = plan_merge(recipe, parents)
    monkeypatch.setattr(ex, "BLOCK_BYTES", 4096)
    job = next(j for j in plan.jobs if j.name.endswith("layers.1.mlp.experts.gate_up_proj"))
    got = ex.run_job(job, parents, seed=7)
    # by hand: each block merged alone, its generator seeded from (seed, key#first expert)
    for e0, e1 in ex.job_blocks(job):  # type: ignore[union-attr]
        ins = [ex.realize(f, parents, job.shape)[e0:e1] for f in job.inputs]
        base = ex.realize(job.base, parents, job.shape)[e0:e1]  # type: ignore[arg-type]
        shape = (e1 - e0, *job.group_shape[1:])  # type: ignore[index]
        gen = torch.Generator().manual_seed(
            ex.job_seed(7, job.seed_key if e0 == 0 else f"{job.seed_key}#{e0}")
        )
        want = apply_method(
            "dare_ties",
            [t.reshape(shape) for t in ins],
            base=base.reshape(shape),
            model_params=job.model_params,
            params=job.params,
            group_dims=job.group_dims,
            generator=gen,
        ).reshape(e1 - e0, *job.shape[1:])
        assert torch.equal(got[e0:e1], want), (e0, e1)
    # the blocks' own streams: not the whole-tensor draw of an unblocked job
    monkeypatch.setattr(ex, "BLOCK_BYTES", 1 << 40)
    whole = ex.run_job(job, parents, seed=7)
    assert not torch.equal(whole[1:], got[1:])
    monkeypatch.setattr(ex, "BLOCK_BYTES", 4096)
    # any thread count gives the same child
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            _merged(plan, parents, 1).values(), _merged(plan, parents, 2).values(), strict=True
        )
    )


def _pair(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype) * 0.02 for _ in range(3)]


@pytest.mark.parametrize(
    ("method", "params", "model_params", "with_base"),
    [
        ("linear", {}, [{"weight": 0.3}, {"weight": 0.7}], False),
        ("linear", {"normalize": False}, [{"weight": 0.3}, {"weight": 0.5}], False),
        ("slerp", {"t": 0.35}, [], False),
        ("ties", {}, [{"weight": 0.5, "density": 0.4}] * 2, True),
        ("task_arithmetic", {}, [{"weight": 0.6}] * 2, True),
        ("dare_linear", {}, [{"weight": 0.5, "density": 0.5}] * 2, True),  # takes no out=
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_out_equals_a_fresh_result(method, params, model_params, with_base, dtype):
    """Groups of 8192 elements: the streamed paths run; bf16 inputs take lerp's path."""
    a, b, base = _pair((4, 2, 64, 64), dtype)
    kwargs = dict(
        base=base if with_base else None,
        model_params=model_params,
        params=params,
        group_dims=2,
    )
    random = method.startswith("dare")
    gen = (lambda: torch.Generator().manual_seed(3)) if random else (lambda: None)
    fresh = apply_method(method, [a, b], generator=gen(), **kwargs)
    out = torch.full_like(a, float("nan"))
    got = apply_method(method, [a, b], generator=gen(), out=out, **kwargs)
    assert got is out and torch.equal(out, fresh.to(out.dtype))
    # another dtype: cast exactly like .to()
    other = torch.empty(a.shape, dtype=torch.float16)
    apply_method(method, [a, b], generator=gen(), out=other, **kwargs)
    assert torch.equal(other, fresh.to(torch.float16))


def test_linear_and_slerp_write_into_out_itself():
    a, b, _ = _pair((4, 8192), torch.bfloat16)
    out = torch.empty_like(a)
    assert linear([a, b], weights=[0.5, 0.5], out=out).data_ptr() == out.data_ptr()
    assert torch.equal(out, torch.lerp(a, b, 0.5))
    af, bf, _ = _pair((4, 8192))
    outf = torch.empty_like(af)
    assert slerp(af, bf, t=0.3, group_dims=1, out=outf).data_ptr() == outf.data_ptr()
    assert torch.equal(outf, slerp(af, bf, t=0.3, group_dims=1))


def test_out_of_the_wrong_shape_is_one_line():
    a, b, _ = _pair((4, 16))
    with pytest.raises(Exception, match="out has shape"):
        apply_method("linear", [a, b], model_params=[{"weight": 1}] * 2, out=torch.empty(16, 4))


def test_in_place_merges_never_write_into_a_parent(parents):
    """A child dict merged twice in place (linear at weight 0 hands back the father's
    values): the second merge writes into the child's own storage, not the father's."""
    recipe = Recipe.parse(
        {
            "parents": [
                {"name": "father", "path": "/f", "parameters": {"weight": 1.0}},
                {"name": "mother", "path": "/m", "parameters": {"weight": 0.0}},
            ],
            "method": "linear",
        }
    )
    parents = parents[:2]
    plan = plan_merge(recipe, parents)
    father_before = {k: v.clone() for k, v in parents[0]._t.items()}  # type: ignore[attr-defined]
    from darwinmerge.merge import merge_into

    child: dict[str, torch.Tensor] = {}
    merge_into(plan, parents, child)
    plan2 = plan_merge(_recipe("slerp", {"t": 0.5}).model_copy(update={"base": None}), parents)
    merge_into(plan2, parents, child)
    for k, v in father_before.items():
        assert torch.equal(parents[0]._t[k], v), k  # type: ignore[attr-defined]
