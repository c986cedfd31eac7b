"""MergeOptions: the one channel that changes how a merge runs (never what it computes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from darwinmerge.merge import MergeOptions, Recipe, merge_to_disk
from darwinmerge.merge.kernels import KERNELS, streamed
from darwinmerge.merge.options import KERNEL_NAMES
from darwinmerge.zoo.tiny import make_parent_pair

from .conftest import read_tensors
from .test_bad_input import _run


def test_options_name_every_kernel_and_refuse_unknown_ones() -> None:
    assert set(KERNEL_NAMES) == set(KERNELS)
    default = MergeOptions()
    assert all(default.uses(k) for k in KERNEL_NAMES)
    assert not any(MergeOptions.reference().uses(k) for k in KERNEL_NAMES)
    assert MergeOptions(kernels={"numba": False}).uses("streamed_task_arithmetic")
    with pytest.raises(ValidationError, match="unknown kernel.*'fused'.*known: streamed_"):
        MergeOptions(kernels={"fused": False})
    with pytest.raises(ValidationError):
        MergeOptions(debugging=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        default.debug = True  # type: ignore[misc]  # frozen


def test_environment_variables_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the package used to read are ignored (fresh import)."""
    import importlib

    import darwinmerge.checkpoint.reader as reader
    import darwinmerge.merge.kernels.fused as fused

    monkeypatch.setenv("DARWIN_FUSED", "0")
    monkeypatch.setenv("DARWIN_DIRECT_READS", "0")
    assert importlib.reload(fused).AVAILABLE  # numba is a dependency
    assert not hasattr(importlib.reload(reader), "DIRECT_READS")


@pytest.mark.parametrize("method", ["ties", "dare_ties", "task_arithmetic"])
def test_kernels_off_write_the_same_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """A whole merge with every kernel on, and with the reference maths only: the same
    bytes (the tiny model's groups are small, so the kernels are let take them)."""
    monkeypatch.setattr(streamed, "MIN_GROUP", 1)
    monkeypatch.setattr(streamed, "CHUNK", 1 << 10)
    a, b = make_parent_pair("qwen3_5_moe", tmp_path)
    base, _ = make_parent_pair("qwen3_5_moe", tmp_path / "base", seed_a=5, seed_b=6)
    params: dict = {"weight": 0.6}
    if method != "task_arithmetic":
        params["density"] = 0.4
    if method == "dare_ties":  # with rescale its chunked L1 sums agree to float32 rounding
        params["rescale"] = False
    recipe = Recipe.parse(
        {
            "parents": [{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
            "base": str(base),
            "method": method,
            "parameters": params,
            "seed": 3,
        }
    )
    fast = merge_to_disk(recipe, tmp_path / "fast", threads=2)
    ref = merge_to_disk(recipe, tmp_path / "ref", options=MergeOptions.reference())
    want, got = read_tensors(ref.out_dir), read_tensors(fast.out_dir)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert sum(not torch.equal(got[k], read_tensors(a)[k]) for k in got) > len(got) // 2


def test_cli_refuses_an_unknown_kernel_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_parent_pair("llama", tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"parents: [{{name: a, path: {a}}}, {{name: b, path: {b}}}]\n"
        "method: slerp\nparameters: {t: 0.5}\n"
    )
    capsys.readouterr()
    assert _run(["merge", str(recipe), str(tmp_path / "o"), "--kernel", "fused=off"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown kernel(s) 'fused'" in err[0] and "numba" in err[0]
    assert _run(["merge", str(recipe), str(tmp_path / "o"), "--kernels", "maybe"]) == 1
    assert "--kernels 'maybe': expected on or off" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    code = _run(["merge", str(recipe), str(tmp_path / "o"), "--kernels", "off",
                 "--kernel", "numba=on", "--no-direct-reads"])  # fmt: skip
    assert code == 0 and (tmp_path / "o" / "config.json").exists()


def test_evolve_config_carries_options_and_engine_options() -> None:
    from darwinmerge.evolve.api import worker_spec
    from darwinmerge.evolve.config import EvolveConfig

    cfg = EvolveConfig.model_validate(
        {
            "parents": {"a": "/x/a", "b": "/x/b"},
            "space": {"kind": "seed"},
            "backend": {"name": "vllm", "engine_options": {"enforce_eager": True}},
            "options": {"debug": True, "kernels": {"numba": False}},
        }
    )
    spec = worker_spec(cfg, [], ["c"], score="accuracy")
    assert dict(spec.engine_options) == {"enforce_eager": True}
    assert spec.options.debug and not spec.options.uses("numba")
    with pytest.raises(ValidationError, match="unknown kernel"):
        EvolveConfig.model_validate(
            {"parents": {"a": "/x/a", "b": "/x/b"}, "space": {"kind": "seed"},
             "options": {"kernels": {"nope": True}}}
        )  # fmt: skip
