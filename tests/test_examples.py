"""Every shipped example config parses and validates (STYLE rule 6): recipes and
mergekit YAMLs, evolve configs and run configs, each through its own loader and through
``darwin validate`` (without opening the parents, which live elsewhere)."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from darwinmerge.cli import app
from darwinmerge.merge import load_any_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.y*ml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(path: Path):
    from darwinmerge.evolve.config import is_evolve_config, load_evolve_config
    from darwinmerge.run.config import is_run_config, load_run_config

    data = yaml.safe_load(path.read_text())
    if is_run_config(data):  # darwin run configs
        run = load_run_config(path, check_paths=False)
        assert all(Path(p).is_absolute() for p in run.parents.values())
        assert run.evolve_config(path.parent / "mri").trials >= 1
    elif is_evolve_config(data):  # darwin evolve configs
        config = load_evolve_config(path, check_paths=False)
        assert all(Path(p).is_absolute() for p in config.parents.values())
    else:
        recipe = load_any_config(path)
        assert recipe.parents and (len(recipe.parents) >= 2 or recipe.base)
        for parent in recipe.parents:
            assert Path(parent.path).is_absolute()
    result = CliRunner().invoke(app, ["validate", str(path), "--no-check-parents"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
