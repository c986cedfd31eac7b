"""copy_side_files and write_model_card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from darwinmerge.checkpoint import SIDE_FILES, copy_side_files, write_model_card
from darwinmerge.errors import CheckpointError, ConfigError


def test_copy_side_files_with_config_updates(tmp_path: Path) -> None:
    donor = tmp_path / "donor"
    donor.mkdir()
    config = {"model_type": "llama", "dtype": "float32", "rope": {"theta": 10000, "type": "x"}}
    (donor / "config.json").write_text(json.dumps(config))
    (donor / "tokenizer.json").write_text('{"tok": 1}')
    (donor / "merges.txt").write_bytes(b"a b\n\xc3\xa9 c\n")
    (donor / "model.safetensors").write_bytes(b"not copied")
    (donor / "random.txt").write_text("not copied")
    dest = tmp_path / "dest"
    copied = copy_side_files(
        donor, dest, config_updates={"dtype": "bfloat16", "rope": {"theta": 5e5}}
    )
    assert copied == ["config.json", "tokenizer.json", "merges.txt"]
    assert sorted(p.name for p in dest.iterdir()) == sorted(copied)
    new = json.loads((dest / "config.json").read_text())
    assert new == {"model_type": "llama", "dtype": "bfloat16", "rope": {"theta": 5e5, "type": "x"}}
    assert (dest / "merges.txt").read_bytes() == b"a b\n\xc3\xa9 c\n"
    assert json.loads((donor / "config.json").read_text()) == config  # donor untouched


def test_side_file_list() -> None:
    assert SIDE_FILES[0] == "config.json" and len(SIDE_FILES) == len(set(SIDE_FILES)) == 14
    assert "tokenizer.model" in SIDE_FILES and "chat_template.jinja" in SIDE_FILES


def test_copy_side_files_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope: donor directory does not exist"):
        copy_side_files(tmp_path / "nope", tmp_path / "d")
    (tmp_path / "donor").mkdir()
    with pytest.raises(CheckpointError, match=r"config.json: missing, cannot apply"):
        copy_side_files(tmp_path / "donor", tmp_path / "d", config_updates={"dtype": "bfloat16"})
    assert copy_side_files(tmp_path / "donor", tmp_path / "d") == []


RECIPE = """\
method: slerp
parents: [org/a, org/b]
layers:
  - {range: [0, 4], t: 0.3}
dtype: bfloat16
"""


def test_model_card_front_matter_and_recipe(tmp_path: Path) -> None:
    path = write_model_card(
        tmp_path,
        base_models=["org/a", "org/b"],
        recipe_yaml=RECIPE,
        title="Darwin Tiny\nChild",
        method="slerp",
        notes=["Scores are on held-out tasks."],
        extra_sections={"Scores": "| task | score |\n|---|---|\n| arith | 0.91 |"},
    )
    assert path == tmp_path / "README.md"
    text = path.read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta == {
        "base_model": ["org/a", "org/b"],
        "library_name": "transformers",
        "tags": ["merge", "darwinmerge", "slerp"],
    }
    assert "# Darwin Tiny Child\n" in body
    assert "- `org/a`\n- `org/b`\n" in body
    assert "- Scores are on held-out tasks." in body
    assert "## Scores\n\n| task | score |" in body
    block = body.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert block + "\n" == RECIPE
    assert yaml.safe_load(block)["layers"][0]["t"] == 0.3


def test_model_card_validates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_models"):
        write_model_card(tmp_path, base_models=[], recipe_yaml=RECIPE, title="t", method="m")
    with pytest.raises(ConfigError, match="recipe_yaml is not valid YAML"):
        write_model_card(tmp_path, base_models=["a"], recipe_yaml="a: [", title="t", method="m")
    card = write_model_card(
        tmp_path, base_models=["a"], recipe_yaml="note: '```'\n", title="t", method="m"
    ).read_text()
    assert "````yaml\nnote: '```'\n````" in card  # longer fence keeps the block intact
