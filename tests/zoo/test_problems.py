"""The merge-problem suite on a micro zoo: deterministic for a seed, cached, and every
trained parent differs from its start only where its phases train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darwinmerge.errors import ConfigError, OutputExistsError
from darwinmerge.zoo.build import build_zoo, micro_config
from darwinmerge.zoo.problems import (
    PROBLEMS,
    build_suite,
    micro_suite_config,
    problem_parents,
    read_suite,
)


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("suite")
    zoo = root / "zoo"
    build_zoo(zoo, micro_config(seed=0))
    suite = root / "suite"
    return zoo, suite, build_suite(suite, zoo, micro_suite_config())


def test_suite_has_every_problem_with_loadable_parents(built: tuple[Path, Path, dict]) -> None:
    from transformers import AutoModelForCausalLM

    zoo, suite, manifest = built
    assert len(PROBLEMS) >= 6
    assert set(manifest["problems"]) == set(PROBLEMS.names())
    assert sum(1 for e in manifest["problems"].values() if e["hard"]) == 2
    assert read_suite(suite) == manifest
    assert (suite / "tasks" / "reasoning.jsonl").read_bytes() == (
        zoo / "tasks" / "reasoning.jsonl"
    ).read_bytes()
    for name in manifest["problems"]:
        paths = problem_parents(suite, name)
        for role in ("a", "b"):
            assert (paths[role] / "config.json").exists(), (name, role)
        AutoModelForCausalLM.from_pretrained(paths["b"])
    assert problem_parents(suite, "zoo_pair")["b"] == zoo.resolve() / "mother"
    deep = problem_parents(suite, "deep")
    assert deep["base"] == suite / "deep" / "base"
    cfg = AutoModelForCausalLM.from_pretrained(deep["a"]).config
    assert cfg.num_hidden_layers == 8 and cfg.num_experts == 8
    assert not any(p.name.startswith(".") for p in suite.parent.iterdir())


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_parents_change_only_where_their_phases_train(built: tuple[Path, Path, dict]) -> None:
    zoo, suite, _ = built
    father = _state(zoo / "father")
    a = _state(suite / "attn_vs_experts" / "a")
    changed = _changed(father, a)
    assert changed and all(("linear_attn." in k or "self_attn." in k) for k in changed)
    b = _state(suite / "attn_vs_experts" / "b")
    changed = _changed(father, b)
    assert changed and all("mlp.experts" in k for k in changed)
    a = _state(suite / "opposite_layers" / "a")
    assert {k.split(".")[2] for k in _changed(father, a)} == {"0", "1"}
    b = _state(suite / "opposite_layers" / "b")
    assert {k.split(".")[2] for k in _changed(father, b)} == {"2", "3"}
    golden = _state(suite / "golden_layer" / "b")
    assert {k.split(".")[2] for k in _changed(father, golden)} == {"0", "1", "2", "3"}
    base = _state(zoo / "base")
    spec = _state(suite / "specialists" / "a")
    assert len(_changed(base, spec)) == len(base)  # every parameter trains


def test_suite_is_deterministic_and_cached(built: tuple[Path, Path, dict], tmp_path: Path) -> None:
    zoo, suite, manifest = built
    assert build_suite(suite, zoo, micro_suite_config()) == manifest  # reused
    only = ("opposite_layers", "deep")
    again = build_suite(tmp_path / "s2", zoo, micro_suite_config(), only=only)
    for name in only:
        for role in ("a", "b"):
            assert (
                again["problems"][name][role]["weights_sha256"]
                == manifest["problems"][name][role]["weights_sha256"]
            )
    with pytest.raises(OutputExistsError, match="--force"):
        build_suite(tmp_path / "s2", zoo, micro_suite_config(), only=("deep",))
    with pytest.raises(ConfigError, match="opposite_layers"):
        build_suite(tmp_path / "s3", zoo, micro_suite_config(), only=("oposite_layers",))
    with pytest.raises(ConfigError, match="no problem 'nope'"):
        problem_parents(suite, "nope")
