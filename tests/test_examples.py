"""Every shipped example config parses and validates (STYLE rule 6)."""

from pathlib import Path

import pytest

from darwinmerge.merge import load_any_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.y*ml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(path: Path):
    import yaml

    from darwinmerge.evolve.config import is_evolve_config, load_evolve_config

    if is_evolve_config(yaml.safe_load(path.read_text())):  # darwin evolve configs
        config = load_evolve_config(path, check_paths=False)
        assert all(Path(p).is_absolute() for p in config.parents.values())
        return
    recipe = load_any_config(path)
    assert recipe.parents and (len(recipe.parents) >= 2 or recipe.base)
    for parent in recipe.parents:
        assert Path(parent.path).is_absolute()
