"""Zoo build: deterministic, cached, refuses foreign folders, parents load in transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from darwinmerge.errors import OutputExistsError
from darwinmerge.zoo.build import (
    PARENTS,
    ZooConfig,
    build_zoo,
    micro_config,
    read_manifest,
    state_dict_hash,
)
from darwinmerge.zoo.skills import CATEGORIES


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("zoo") / "z"
    return out, build_zoo(out, micro_config(seed=1))


def test_layout_and_manifest(zoo: tuple[Path, dict]) -> None:
    out, manifest = zoo
    assert read_manifest(out) == manifest
    assert manifest["model_type"] == "qwen3_5_moe_text"
    assert manifest["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    assert set(manifest["weights_sha256"]) == set(PARENTS)
    assert len(set(manifest["weights_sha256"].values())) == 3  # base != father != mother
    assert manifest["train"]["pretrain"]["steps"] == 3
    assert [p["steps"] for p in manifest["train"]["finetune"]] == [2, 1]
    for c in CATEGORIES:
        lines = (out / "tasks" / f"{c}.jsonl").read_text().splitlines()
        assert len(lines) == manifest["tasks"][c] == 20
        assert json.loads(lines[0])["id"] == f"{c}-0000"
    assert not any(p.name.startswith(".z.tmp") for p in out.parent.iterdir())


def test_same_seed_same_hashes_other_seed_differs(zoo: tuple[Path, dict], tmp_path: Path) -> None:
    _, manifest = zoo
    again = build_zoo(tmp_path / "again", micro_config(seed=1))
    assert again["weights_sha256"] == manifest["weights_sha256"]
    other = build_zoo(tmp_path / "other", micro_config(seed=2))
    assert other["weights_sha256"]["base"] != manifest["weights_sha256"]["base"]


def test_parents_load_in_transformers_with_the_saved_weights(zoo: tuple[Path, dict]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, manifest = zoo
    for name in PARENTS:
        model = AutoModelForCausalLM.from_pretrained(out / name)
        assert type(model).__name__ == "Qwen3_5MoeForCausalLM"
        assert state_dict_hash(model.state_dict()) == manifest["weights_sha256"][name]
        tok = AutoTokenizer.from_pretrained(out / name)
        prompt = "calc 12+3-4\n"
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        assert tok.decode(ids[0]) == prompt
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=4, do_sample=False)
        assert gen.shape == (1, ids.shape[1] + 4) or int(gen[0, -1]) == tok.eos_token_id
        assert model.generation_config.eos_token_id == tok.eos_token_id == 0


def test_cache_reuse_and_refusal(zoo: tuple[Path, dict], tmp_path: Path) -> None:
    out, manifest = zoo
    stamp = (out / "father" / "model.safetensors").stat().st_mtime_ns
    assert build_zoo(out, micro_config(seed=1)) == manifest  # reused, not rebuilt
    assert (out / "father" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(OutputExistsError, match="--force"):
        build_zoo(out, micro_config(seed=3))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        build_zoo(foreign, micro_config(seed=1))
    assert (foreign / "keep.txt").exists()
    rebuilt = build_zoo(foreign, micro_config(seed=1), force=True)
    assert rebuilt["weights_sha256"] == manifest["weights_sha256"]
    assert not (foreign / "keep.txt").exists()


def test_config_is_strict() -> None:
    with pytest.raises(ValueError):
        ZooConfig(seed=0, learning_rate=1.0)  # type: ignore[call-arg]


def test_mother_differs_from_father_only_where_her_phases_train(zoo: tuple[Path, dict]) -> None:
    from safetensors.torch import load_file

    out, _ = zoo
    father = load_file(out / "father" / "model.safetensors")
    mother = load_file(out / "mother" / "model.safetensors")
    changed = {k for k in father if not torch.equal(father[k], mother[k])}
    # micro phases: train_only ("mlp.",) then ("lm_head",)
    assert changed and all("mlp." in k or "lm_head" in k for k in changed)
    assert any("lm_head" in k for k in changed) and any("mlp.experts" in k for k in changed)


def test_lr_schedule_warmup_then_cosine() -> None:
    from darwinmerge.zoo.train import TrainConfig, _lr_at

    cfg = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert _lr_at(0, cfg) == pytest.approx(0.1)
    assert _lr_at(9, cfg) == pytest.approx(1.0)
    assert _lr_at(10, cfg) == pytest.approx(1.0)
    assert _lr_at(60, cfg) == pytest.approx(0.55)  # half way: 0.1 + 0.9 * 0.5
    assert _lr_at(110, cfg) == pytest.approx(0.1)
