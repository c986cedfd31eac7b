"""The zoo is a plug-in of the MRI, not a dependency: mri never imports it, and the zoo
probe set arrives through the probe-set registry's plug-in table."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from darwinmerge.errors import ConfigError, UnknownNameError
from darwinmerge.mri import PROBE_SETS, resolve_probes
from darwinmerge.registry import Registry

MRI_DIR = Path(__file__).resolve().parents[2] / "src" / "darwinmerge" / "mri"


def test_no_mri_module_imports_the_zoo():
    offenders = []
    files = sorted(MRI_DIR.glob("*.py"))
    assert len(files) >= 10
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            offenders += [f"{f.name}: {n}" for n in names if n.startswith("darwinmerge.zoo")]
    assert offenders == []


_SCRIPT = """
import importlib, pkgutil, sys
import darwinmerge.mri as mri
mods = [m.name for m in pkgutil.iter_modules(mri.__path__, "darwinmerge.mri.")]
for m in mods:
    importlib.import_module(m)
zoo = sorted(m for m in sys.modules if m.startswith("darwinmerge.zoo"))
print(len(mods), zoo)
"""


def test_importing_every_mri_module_loads_no_zoo_module():
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert int(out[0]) >= 9 and out[1] == "[]"


def _fake_zoo(tmp_path, seed, n_facts, eval_items=300):
    config = {"seed": seed, "n_facts": n_facts, "eval_items": eval_items}
    (tmp_path / "zoo.json").write_text(json.dumps({"config": config}))
    return tmp_path


def test_zoo_at_dir_resolves_through_the_plug_in(tmp_path):
    from darwinmerge.zoo.probes import zoo_probe_set

    zoo = _fake_zoo(tmp_path, 3, 40)
    got = resolve_probes([f"zoo@{zoo}"])
    assert got == zoo_probe_set(3, n_facts=40, eval_items=300) != zoo_probe_set(0)
    assert resolve_probes([f"zoo:{zoo}"]) == got
    assert resolve_probes(["zoo@3"]) == zoo_probe_set(3)
    assert "zoo" in PROBE_SETS
    with pytest.raises(ConfigError, match="not a readable zoo manifest"):
        resolve_probes([f"zoo@{tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="takes no argument"):
        resolve_probes(["builtin@x"])


def test_plugin_tables_skip_missing_and_raise_broken(monkeypatch, tmp_path):
    reg: Registry[int] = Registry("thing", plugins={"gone": "darwinmerge.no_such_plugin"})
    assert "gone" in reg and reg.names() == ["gone"]
    with pytest.raises(UnknownNameError, match="unknown thing 'gone'"):
        reg.get("gone")  # not installed: the name is dropped, not an import error
    assert "gone" not in reg
    broken = tmp_path / "broken_plugin_mod.py"
    broken.write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing", plugins={"b": "broken_plugin_mod"})
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        reg.get("b")


_TASKS = """
import sys
from darwinmerge.evaluate import load_tasks
items = load_tasks("zoo", split="all")
print(len(items), "darwinmerge.zoo.tasks" in sys.modules)
"""


def test_zoo_task_source_loads_through_the_plug_in():
    out = subprocess.run(
        [sys.executable, "-c", _TASKS], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert int(out[0]) > 0 and out[1] == "True"
