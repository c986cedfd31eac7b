"""``darwin merge --export-mergekit FILE``: a recipe written as mergekit YAML gives the same
child in mergekit as in darwin; what mergekit cannot express is refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from darwinmerge.cli.app import app
from darwinmerge.errors import ConfigError
from darwinmerge.merge.mergekit_io import recipe_from_mergekit, recipe_to_mergekit
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

from .conftest import read_tensors, require_mergekit, run_mergekit_jobs, write_recipe
from .test_mergekit_e2e import CONFIGS
from .test_stacking import CONFIGS as STACKED

runner = CliRunner()


@pytest.mark.parametrize("name", sorted({**CONFIGS, **STACKED}))
def test_import_export_import_is_the_same_recipe(name: str) -> None:
    config = {**CONFIGS, **STACKED}[name]
    recipe = recipe_from_mergekit(config)
    if name == "sliced_slerp":  # same-range slices import as per-layer-range rules
        with pytest.raises(ConfigError, match="per-layer-range rules are not expressible"):
            recipe_to_mergekit(recipe)
        return
    exported = recipe_to_mergekit(recipe)
    assert recipe_from_mergekit(exported) == recipe
    if recipe.base is None and config.get("base_model") and name != "karcher":
        assert "base_model" not in exported or config["merge_method"] == "slerp"


def test_an_unused_base_is_not_exported() -> None:
    """mergekit merges base_model as one more model for methods that take no base."""
    recipe = recipe_from_mergekit(CONFIGS["linear"]).model_copy(update={"base": "/base"})
    assert "base_model" not in recipe_to_mergekit(recipe)
    ties = recipe_from_mergekit(CONFIGS["ties"])
    assert recipe_to_mergekit(ties)["base_model"] == "base"


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    for tag, seed in (("a", 0), ("b", 1), ("base", 2)):
        save_tiny(build_tiny_model("qwen3", seed=seed), root / tag)
    return root


RECIPES: dict[str, dict[str, Any]] = {
    "ties": {
        "parents": [
            {"name": "a", "path": "a", "parameters": {"weight": 0.6, "density": 0.5}},
            {"name": "b", "path": "b", "parameters": {"density": [0.3, 0.9]}},
        ],
        "base": "base",
        "method": "ties",
        "parameters": {"weight": [{"component": "attention", "value": 0.2}, {"value": 0.5}]},
        "dtype": "float32",
    },
    "stacked_karcher": {
        "parents": [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}],
        "method": "karcher",
        "slices": [
            {"sources": [{"parent": "a", "layers": [0, 2]}, {"parent": "b", "layers": [1, 3]}]},
            {"sources": [{"parent": "b", "layers": [2, 4]}, {"parent": "a", "layers": [2, 4]}]},
        ],
        "parameters": {"max_iter": 3},
        "dtype": "float32",
    },
}


def test_exported_yaml_gives_the_same_child_in_mergekit(parents: Path) -> None:
    require_mergekit()
    jobs = []
    for name, fields in RECIPES.items():
        recipe = write_recipe(parents / f"{name}.yaml", **fields)
        exported = parents / f"{name}.mergekit.yaml"
        result = runner.invoke(
            app,
            ["merge", str(recipe), str(parents / f"dw-{name}"), "--export-mergekit", str(exported)],
        )
        assert result.exit_code == 0, result.output
        assert yaml.safe_load(exported.read_text())["merge_method"] == fields["method"]
        jobs.append([str(exported), str(parents / f"mk-{name}")])
    run_mergekit_jobs(parents, jobs)
    for name in RECIPES:
        ours, theirs = read_tensors(parents / f"dw-{name}"), read_tensors(parents / f"mk-{name}")
        assert ours.keys() == theirs.keys(), name
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=key)


def test_what_mergekit_cannot_express_is_refused_in_one_line(parents: Path) -> None:
    recipe = write_recipe(
        parents / "own.yaml",
        parents=[{"name": "a", "path": "a"}, {"name": "b", "path": "b"}],
        method="trimmed_lerp",
        parameters={"t": 0.4, "density": 0.5},
    )
    out, exported = parents / "dw-own", parents / "own.mergekit.yaml"
    result = runner.invoke(
        app, ["merge", str(recipe), str(out), "--export-mergekit", str(exported)]
    )
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "mergekit cannot express this: method trimmed_lerp is darwinmerge's own" in message
    assert "\n" not in message and not out.exists() and not exported.exists()
