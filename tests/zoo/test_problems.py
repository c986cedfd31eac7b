"""The merge-problem suite on a micro zoo: deterministic for a seed, cached, and every
trained parent differs from its start only where its phases train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from darwinmerge.errors import ConfigError, OutputExistsError
from darwinmerge.zoo.build import build_zoo, micro_config
from darwinmerge.zoo.problems import (
    PROBLEMS,
    SuiteConfig,
    build_cost,
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


def test_suite_is_deterministic_cached_and_completed(
    built: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    zoo, suite, manifest = built
    assert build_suite(suite, zoo, micro_suite_config()) == manifest  # reused
    s2 = tmp_path / "s2"
    again = build_suite(s2, zoo, micro_suite_config(), only=("opposite_layers",))
    assert set(again["problems"]) == {"opposite_layers"}
    first = (s2 / "opposite_layers" / "a" / "model.safetensors").stat().st_mtime_ns
    # completing the suite builds only what is missing, with the same weights
    again = build_suite(s2, zoo, micro_suite_config(), only=("opposite_layers", "deep"))
    assert (s2 / "opposite_layers" / "a" / "model.safetensors").stat().st_mtime_ns == first
    for name in ("opposite_layers", "deep"):
        for role in ("a", "b"):
            assert (
                again["problems"][name][role]["weights_sha256"]
                == manifest["problems"][name][role]["weights_sha256"]
            )
    assert read_suite(s2) == again
    # a problem whose config changed is rebuilt alone
    changed = micro_suite_config()
    problems = tuple(
        p.model_copy(update={"intent": "changed"}) if p.name == "deep" else p
        for p in changed.problems
    )
    rebuilt = build_suite(
        s2, zoo, changed.model_copy(update={"problems": problems}), only=("opposite_layers", "deep")
    )
    assert rebuilt["problems"]["deep"]["intent"] == "changed"
    assert (s2 / "opposite_layers" / "a" / "model.safetensors").stat().st_mtime_ns == first
    assert not any(p.name.startswith(".") for p in s2.iterdir())
    # a suite of another zoo is refused unless --force
    other = read_suite(s2)
    other["zoo_sha256"] = {"father": "0" * 64}
    (s2 / "suite.json").write_text(json.dumps(other))
    with pytest.raises(OutputExistsError, match="--force"):
        build_suite(s2, zoo, micro_suite_config(), only=("deep",))
    fresh = build_suite(s2, zoo, micro_suite_config(), only=("deep",), force=True)
    assert set(fresh["problems"]) == {"deep"} and not (s2 / "opposite_layers").exists()
    with pytest.raises(ConfigError, match="opposite_layers"):
        build_suite(tmp_path / "s3", zoo, micro_suite_config(), only=("oposite_layers",))
    with pytest.raises(ConfigError, match="no problem 'nope'"):
        problem_parents(suite, "nope")
    # the zoo itself (or a folder holding it) is never taken for a suite, even with force
    for target in (zoo, zoo.parent):
        with pytest.raises(ConfigError, match="holds the zoo"):
            build_suite(target, zoo, micro_suite_config(), only=("deep",), force=True)
    assert (zoo / "zoo.json").is_file() and (zoo / "father" / "config.json").is_file()


def test_a_pretrained_parent_needs_a_pretraining() -> None:
    from pydantic import ValidationError

    from darwinmerge.zoo.problems import ParentSpec, Problem

    with pytest.raises(ValidationError, match="'pretrained' parents need `pretrain`"):
        Problem(name="p", intent="-", a=ParentSpec(start="pretrained"), b=ParentSpec(zoo="mother"))
    with pytest.raises(ValidationError, match="need `pretrain`"):
        Problem(
            name="p",
            intent="-",
            a=ParentSpec(zoo="father"),
            b=ParentSpec(zoo="mother"),
            base="pretrained_base",
        )
    assert (
        Problem(name="p", intent="-", a=ParentSpec(zoo="father"), b=ParentSpec(zoo="mother")).base
        == "zoo:base"
    )


def test_parallel_build_gives_the_same_weights(
    built: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    zoo, _, manifest = built
    names = ("golden_layer", "opposite_layers")
    par = build_suite(tmp_path / "par", zoo, micro_suite_config(), only=names, jobs=2)
    assert set(par["problems"]) == set(names) and read_suite(tmp_path / "par") == par
    for name in names:
        for role in ("a", "b"):  # a trained parent's hash, or the zoo model it names
            for key in ("path", "weights_sha256"):
                assert par["problems"][name][role].get(key) == manifest["problems"][name][role].get(
                    key
                )
        assert any("weights_sha256" in par["problems"][name][r] for r in ("a", "b"))
    assert not any(p.name.startswith(".") for p in (tmp_path / "par").iterdir())


def test_a_parallel_build_starts_with_the_longest_problem() -> None:
    """The build cost puts first the problem that trains the longest (measured on seed 0,
    this 2-core machine, 2026-12-07: deep 802 s against 127-368 s for the others), and the
    zoo's own pairs, which train nothing, last."""
    from darwinmerge.zoo.build import ZooConfig

    model = ZooConfig().model
    cost = {p.name: build_cost(p, model) for p in SuiteConfig().problems}
    order = sorted(cost, key=lambda n: -cost[n])
    assert order[0] == "deep" and set(order[-2:]) == {"zoo_pair", "zoo_collapsed"}
    assert cost["zoo_pair"] == cost["zoo_collapsed"] == 0 < min(cost[n] for n in order[:-2])
    # sequences x tokens x layers x width: twice the pre-training steps add their cost
    deep = next(p for p in SuiteConfig().problems if p.name == "deep")
    assert deep.pretrain is not None
    train = deep.pretrain.train
    longer = deep.model_copy(
        update={
            "pretrain": deep.pretrain.model_copy(
                update={"train": train.model_copy(update={"steps": 2 * train.steps})}
            )
        }
    )
    width = deep.pretrain.model.num_layers * deep.pretrain.model.hidden_size
    extra = train.steps * train.batch_size * train.seq_len * width
    assert build_cost(longer, model) == pytest.approx(cost["deep"] + extra)
