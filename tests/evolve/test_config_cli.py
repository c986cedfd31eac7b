"""Evolve configs: parse, overrides, one-line errors with exit 1, ``darwin validate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from darwinmerge.errors import ConfigError
from darwinmerge.evolve.config import is_evolve_config, load_evolve_config

from .search_helpers import config_data, micro_zoo  # noqa: F401

DARWIN = [sys.executable, "-m", "darwinmerge.cli"]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "evolve.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _darwin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DARWIN, *args], capture_output=True, text=True, timeout=300)


def test_parse_overrides_and_relative_paths(micro_zoo, tmp_path):  # noqa: F811
    data = config_data(micro_zoo)
    data["parents"] = {"father": "zoo/father", "mother": "zoo/mother"}
    (tmp_path / "zoo").symlink_to(micro_zoo)
    path = _write(tmp_path, data)
    cfg = load_evolve_config(path, ["trials=7", "optimizer.name=tpe", "fitness.subset=0.5"])
    assert cfg.trials == 7 and cfg.optimizer.name == "tpe" and cfg.fitness.subset == 0.5
    assert cfg.parents["father"] == str((tmp_path / "zoo" / "father").resolve())
    assert cfg.father == "father"
    assert is_evolve_config(data) and not is_evolve_config({"parents": [], "method": "x"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trials": 0}, "trials: Input should be greater than or equal to 1"),
        ({"optimizer": {"name": "cma"}}, "unknown optimizer 'cma' (did you mean 'cmaes'?)"),
        ({"bounds": {"ratio": [0.2, 1.5]}}, "0 <= low < high <= 1"),
        ({"fitness": {"subset": 0}}, "items per category"),
        ({"fitness": {"keep": "reasoning"}}, "fitness.keep: a second objective needs"),
        (
            {"optimizer": {"name": "nsga2"}, "fitness": {"keep": "reasoning"}},
            "early_stop.enabled: not available with two objectives",
        ),
        (
            {"space": {"kind": "seed", "max_blocks": 0}},
            "space: seed.max_blocks: Input should be greater than or equal to 1",
        ),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_reported_at_parse_time(micro_zoo, tmp_path, change, message):  # noqa: F811
    data = config_data(micro_zoo)
    data.update(change)
    with pytest.raises(ConfigError) as err:
        load_evolve_config(_write(tmp_path, data))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_configs_are_one_line_and_exit_1(micro_zoo, tmp_path):  # noqa: F811
    cases = {
        "unknown gene": ({"bounds": {"nonsense": [0.1, 0.2]}}, "unknown gene 'nonsense'"),
        "out-of-range bound": ({"bounds": {"ratio": [-0.5, 0.2]}}, "0 <= low < high <= 1"),
        "missing parent": (
            {"parents": {"father": str(micro_zoo / "father"), "mother": str(tmp_path / "gone")}},
            "parents.mother",
        ),
    }
    for name, (change, message) in cases.items():
        data = config_data(micro_zoo)
        data.update(change)
        path = _write(tmp_path, data)
        commands = [["evolve", str(path), "--out", str(tmp_path / "run")]]
        if name == "unknown gene":  # validate shares the checks; once is enough
            commands.append(["validate", str(path)])
        for args in commands:
            out = _darwin(*args)
            lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
            assert out.returncode == 1, (name, args[0], out.stderr[-500:])
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, lines)
            assert message in lines[0], (name, lines[0])
            assert "Traceback" not in out.stderr
        assert not (tmp_path / "run").exists()


def test_validate_recognises_an_evolve_config(micro_zoo, tmp_path):  # noqa: F811
    path = _write(tmp_path, config_data(micro_zoo))
    out = _darwin("validate", str(path), "bounds.ratio=[0.2,0.6]")
    assert out.returncode == 0, out.stderr[-800:]
    assert "ok: evolve config, space seed with" in out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "ratio: mean 0.500 sigma 0.167 box [0.200, 0.600]" in text


def test_without_ray_one_line_says_how_to_install_it(monkeypatch):
    from darwinmerge.errors import MissingDependencyError
    from darwinmerge.evolve.workers import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # "not installed"
    with pytest.raises(MissingDependencyError) as err:
        import_ray()
    assert str(err.value) == (
        "--workers > 1 runs Ray actors; install Ray with: pip install 'darwinmerge[ray]'"
    )
