"""Hand-made recipes through the merge engine, and the ``zoo`` task source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from darwinmerge.errors import ConfigError
from darwinmerge.evaluate.tasks import TASK_SOURCES, load_tasks, split_of
from darwinmerge.zoo.build import build_zoo, micro_config
from darwinmerge.zoo.recipes import RECIPES, WINNING, Entry, HandRecipe, mother_share, to_recipe
from darwinmerge.zoo.skills import CATEGORIES
from darwinmerge.zoo.tasks import zoo_items


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "z"
    build_zoo(out, micro_config(seed=5))
    return out


def test_mother_share_reads_layers_and_components() -> None:
    rec = HandRecipe(
        "t", "", (Entry("attention", 0.9, (2, 3)), Entry("mlp", 0.6), Entry("lm_head", 0.2)), 0.1
    )
    assert mother_share(rec, "model.layers.3.self_attn.q_proj.weight") == 0.9
    assert mother_share(rec, "model.layers.2.linear_attn.in_proj_qkv.weight") == 0.9
    assert mother_share(rec, "model.layers.1.linear_attn.in_proj_qkv.weight") == 0.1
    assert mother_share(rec, "model.layers.0.mlp.experts.gate_up_proj") == 0.6
    assert mother_share(rec, "model.layers.0.mlp.shared_expert_gate.weight") == 0.6
    assert mother_share(rec, "model.layers.0.mlp.gate.weight") == 0.1  # router is not "mlp"
    assert mother_share(rec, "lm_head.weight") == 0.2
    assert mother_share(rec, "model.embed_tokens.weight") == 0.1
    assert mother_share(WINNING, "model.layers.1.mlp.gate.weight") == 0.7
    assert set(RECIPES) >= {"uniform-0.5", WINNING.name}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_engine_merge_equals_per_tensor_formula(zoo: Path, tmp_path: Path, name: str) -> None:
    from transformers import AutoModelForCausalLM

    from darwinmerge.merge import merge_to_disk

    rec = RECIPES[name]
    merge_to_disk(to_recipe(rec, zoo / "father", zoo / "mother"), tmp_path / "child")
    load = AutoModelForCausalLM.from_pretrained
    f, m, c = (load(p).state_dict() for p in (zoo / "father", zoo / "mother", tmp_path / "child"))
    assert set(c) == set(f)
    differs = 0
    for key, ft in f.items():
        t = mother_share(rec, key)
        torch.testing.assert_close(c[key], (1 - t) * ft + t * m[key], rtol=1e-5, atol=1e-6)
        differs += int(not torch.equal(f[key], m[key]))
    assert differs > 0  # the micro mother really differs from the father


def test_zoo_source_reads_a_built_zoo(zoo: Path) -> None:
    assert "zoo" in TASK_SOURCES
    every = load_tasks(f"zoo:{zoo}", split="all")
    test = load_tasks(f"zoo:{zoo}", split="test")
    fit = load_tasks(f"zoo:{zoo}", split="fitness")
    assert len(every) == 5 * 20 and {it.category for it in every} == set(CATEGORIES)
    assert {it.id for it in test} | {it.id for it in fit} == {it.id for it in every}
    assert not {it.id for it in test} & {it.id for it in fit}
    assert all(split_of(it.id) == "test" for it in test)
    # same items as generated in memory for the same config
    assert [it.to_dict() for it in every] == [
        it.to_dict() for it in zoo_items(micro_config(seed=5))
    ]


def test_zoo_source_by_seed_and_default(tmp_path: Path) -> None:
    default = TASK_SOURCES.get("zoo")("")
    assert len(default) == 5 * 300
    seeded = TASK_SOURCES.get("zoo")("1")
    assert len(seeded) == len(default) and seeded[0].prompt != default[0].prompt
    with pytest.raises(ConfigError, match="not a zoo folder"):
        TASK_SOURCES.get("zoo")(str(tmp_path))


def test_zoo_items_carry_gold_targets_even_from_an_old_folder(zoo: Path, tmp_path: Path) -> None:
    import json
    import shutil
    import warnings

    every = load_tasks(f"zoo:{zoo}", split="all")
    for it in every:  # the gold target is the trace, then the answer line
        assert it.target is not None and it.target.endswith(f"\nANSWER: {it.answer}")
    # a folder built before the field existed: its files lack `target`
    old = tmp_path / "old"
    (old / "tasks").mkdir(parents=True)
    shutil.copy(zoo / "zoo.json", old / "zoo.json")
    for f in (zoo / "tasks").glob("*.jsonl"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        for r in rows:
            del r["target"]
        (old / "tasks" / f.name).write_text("\n".join(json.dumps(r) for r in rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # regenerated from the seeded world: no warning
        again = load_tasks(f"zoo:{old}", split="all")
    assert [it.to_dict() for it in again] == [it.to_dict() for it in every]
    # without a readable manifest the items keep no target, and a warning says so
    (old / "zoo.json").write_text("{}")
    with pytest.warns(UserWarning, match="bare answer"):
        bare = load_tasks(f"zoo:{old}", split="all")
    assert all(it.target is None and it.gold == it.answer for it in bare)
