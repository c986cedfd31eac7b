"""Lazy package exports (darwinmerge.lazy): the TYPE_CHECKING imports are the exports,
each resolves to its module's object, and importing a light submodule loads nothing else."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from darwinmerge.lazy import type_checking_imports

LAZY = [
    "darwinmerge.merge",
    "darwinmerge.evolve",
    "darwinmerge.run",
    "darwinmerge.mri",
    "darwinmerge.health",
]


def test_type_checking_imports_reads_only_the_guarded_block():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from darwinmerge.lazy import lazy_exports\n"
        "if TYPE_CHECKING:\n"
        "    from darwinmerge.a import B, c as d\n"
        "    from darwinmerge.e.f import G\n"
        "X = 1\n"
    )
    assert type_checking_imports(source) == {
        "B": "darwinmerge.a",
        "d": "darwinmerge.a",
        "G": "darwinmerge.e.f",
    }


@pytest.mark.parametrize("name", LAZY)
def test_every_export_resolves_to_its_module_object(name: str):
    package = importlib.import_module(name)
    where = type_checking_imports(Path(package.__file__).read_text())
    assert sorted(package.__all__) == sorted(where)
    for export, module in where.items():
        assert getattr(package, export) is getattr(importlib.import_module(module), export)
    assert set(where) <= set(dir(package))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018


def test_export_named_like_a_submodule_stays_the_export():
    """health.repair is a function and a module; loading the module keeps the function."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import darwinmerge.health.pipeline, darwinmerge.health.repair\n"
            "from darwinmerge.health import repair\n"
            "import darwinmerge.health as h\n"
            "print(callable(repair), type(h.repair).__name__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "function"]


def test_light_submodules_load_no_torch():
    """The declarations and config models import without torch, transformers or numpy."""
    code = (
        "import sys\n"
        "import darwinmerge.merge.methods, darwinmerge.merge.recipe, darwinmerge.merge\n"
        "import darwinmerge.evolve.config, darwinmerge.evolve.samplers, darwinmerge.evolve.space\n"
        "import darwinmerge.run.config, darwinmerge.mri.config, darwinmerge.health.options\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
