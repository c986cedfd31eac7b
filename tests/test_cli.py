"""The one ``darwin`` command: every subcommand registered, errors are one line."""

import subprocess
import sys
from pathlib import Path

import pytest

DARWIN = [sys.executable, "-m", "darwinmerge.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DARWIN, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("merge", "validate", "inspect", "eval", "demo"):
        assert cmd in out.stdout, cmd


def test_usage_and_library_errors_are_one_line(tmp_path: Path):
    usage = _run("merge", "--threads", "many", "a.yaml", "out")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "--threads" in usage.stderr
    missing = _run("merge", str(tmp_path / "nope.yaml"), str(tmp_path / "out"))
    assert missing.returncode == 1
    lines = [ln for ln in missing.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and "nope.yaml" in lines[-1] and "not found" in lines[-1]
    assert "Traceback" not in missing.stderr
    debug = _run("--debug", "merge", str(tmp_path / "nope.yaml"), str(tmp_path / "out"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


_IMPORT_PROBE = r"""
import json, sys, traceback

HEAVY = ("torch", "transformers", "numpy")
seen = {}

class Spy:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in HEAVY and top not in seen:
            # the darwinmerge import chain, innermost (the module that pulled it in) first
            frames = [
                f"{f.filename.split('src/')[-1]}:{f.lineno}"
                for f in traceback.extract_stack()
                if "darwinmerge" in f.filename and "cli/app.py" not in f.filename
            ]
            seen[top] = " <- ".join(reversed(frames)) or "?"
        return None

sys.meta_path.insert(0, Spy())
from darwinmerge.cli.app import app, main
codes = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["darwin", *args]
    try:
        main()
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code if isinstance(exc.code, int) else 1)
print(json.dumps({"heavy": seen, "codes": codes}))
"""


def _probe(*commands: list[str]) -> tuple[dict[str, str], list[int]]:
    """Run ``darwin`` commands in one fresh interpreter: heavy module -> the darwinmerge
    import chain that first pulled it in, and each command's exit code."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(list(commands))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["heavy"], result["codes"]


def _heavy_imports(*commands: list[str]) -> dict[str, str]:
    return _probe(*commands)[0]


def test_help_and_usage_errors_import_no_torch():
    """``darwin --help``, every subcommand's --help and usage errors answer without
    importing torch / transformers / numpy (the message names the module to fix)."""
    from darwinmerge.cli.app import _COMMAND_MODULES

    subcommands = [m.rsplit(".", 1)[1].removesuffix("_cmd") for m in _COMMAND_MODULES]
    commands = [["--help"], ["merge"], ["merge", "--threads", "many", "a", "b"]]
    commands += [[name, "--help"] for name in subcommands]
    heavy = _heavy_imports(*commands)
    assert not heavy, "imported at --help / usage time: " + ", ".join(
        f"{mod} (first imported from {where})" for mod, where in heavy.items()
    )


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "config",
    ["seed-recipe.yaml", "mergekit-ties.yml", "zoo-evolve.yaml", "seed-run.yaml", "zoo-run.yaml"],
)
def test_validate_without_parents_imports_no_torch(config: str):
    """``darwin validate --no-check-parents`` answers for a recipe, a mergekit YAML, an
    evolve config and a run config without importing torch, transformers or numpy: the
    method declarations, the recipe checks and the config models are torch-free. The
    message names the darwinmerge import chain to fix."""
    heavy, codes = _probe(["validate", str(EXAMPLES / config), "--no-check-parents"])
    assert codes == [0]
    assert not heavy, f"darwin validate {config} imported: " + "; ".join(
        f"{mod} via {chain}" for mod, chain in heavy.items()
    )


def test_validate_bad_recipe_imports_no_torch(tmp_path: Path):
    """A recipe that fails its method checks is reported (exit 1) without torch either."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "parents:\n  - {name: a, path: /nowhere/a}\n  - {name: b, path: /nowhere/b}\n"
        "method: della\nparameters: {weight: 1.0, density: 0.5, epsilon: 0.6}\n"
    )
    heavy, codes = _probe(["validate", str(recipe), "--no-check-parents"])
    assert codes == [1]
    assert not heavy, heavy
