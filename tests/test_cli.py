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


def _commands() -> dict[str, object]:
    """Every ``darwin`` command (``zoo build`` included) as its click command."""
    import typer.main

    from darwinmerge.cli.app import app

    root = typer.main.get_command(app)
    found: dict[str, object] = {}

    def walk(group: object, prefix: str) -> None:
        for name, cmd in group.commands.items():  # type: ignore[attr-defined]
            if hasattr(cmd, "commands"):
                walk(cmd, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = cmd

    walk(root, "")
    return found


def test_every_help_lists_options_inputs_output_behaviour_performance():
    """Each command's options come in one order, by panel, and --help shows the panels
    in that order (then --help itself)."""
    import re

    from typer.testing import CliRunner

    from darwinmerge.cli.app import app
    from darwinmerge.cli.options import HELP, PANELS, panel_of

    commands = _commands()
    assert {"merge", "run", "evolve", "mri", "eval", "zoo build", "demo"} <= set(commands)
    for name, cmd in commands.items():
        options = [p for p in cmd.params if p.param_type_name == "option"]  # type: ignore[attr-defined]
        ranks = [PANELS.index(panel_of(p)) for p in options]
        assert ranks == sorted(ranks), name
        assert [p.rich_help_panel for p in options] == [PANELS[r] for r in ranks], name
        text = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "100"}).output
        shown = re.findall(r"╭─ (\w+) ─", text)
        expected = ["Arguments"] * ("Arguments" in shown)
        expected += [p for p in PANELS if p in {PANELS[r] for r in ranks}] + [HELP]
        assert shown == expected, (name, shown)


def test_out_means_the_output_folder_everywhere():
    """Every command that writes a folder takes --out (merge and zoo build also OUT)."""
    writes_a_folder = ("merge", "run", "evolve", "mri", "health", "zoo build", "zoo suite", "demo")
    commands = _commands()
    for name in writes_a_folder:
        opts = [o for p in commands[name].params for o in p.opts]  # type: ignore[attr-defined]
        assert "--out" in opts, name


def test_output_folder_from_argument_or_option(tmp_path: Path):
    from darwinmerge.cli.options import output_folder
    from darwinmerge.errors import ConfigError

    a, b = tmp_path / "a", tmp_path / "b"
    assert output_folder(a, None, ["seed=3"]) == (a, ["seed=3"])
    assert output_folder(None, a, ["seed=3"]) == (a, ["seed=3"])
    assert output_folder(a, a) == (a, [])
    # with --out, a key=value in OUT's place is the first override
    assert output_folder(Path("t=0.4"), a, ["seed=3"]) == (a, ["t=0.4", "seed=3"])
    odd = tmp_path / "t=0.4"  # a folder so named, given both ways, is the folder
    assert output_folder(odd, odd, ["seed=3"]) == (odd, ["seed=3"])
    with pytest.raises(ConfigError, match="two output folders"):
        output_folder(a, b)
    with pytest.raises(ConfigError, match="no output folder"):
        output_folder(None, None)


def test_merge_takes_out_as_argument_or_option(tmp_path: Path):
    """``darwin merge CONFIG OUT`` (as mergekit) and ``darwin merge CONFIG --out OUT
    key=value`` write the same child; two different folders are refused in one line."""
    import torch
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from darwinmerge.cli.app import app
    from darwinmerge.zoo.tiny import make_parent_pair

    a, b = make_parent_pair("llama", tmp_path)
    cfg = tmp_path / "slerp.yaml"
    cfg.write_text(
        f"parents:\n  - {{name: a, path: {a}}}\n  - {{name: b, path: {b}}}\n"
        "method: slerp\nparameters: {t: 0.0}\n"
    )
    runner = CliRunner()
    for args in (
        ["merge", str(cfg), str(tmp_path / "pos"), "parameters.t=1.0"],
        ["merge", str(cfg), "--out", str(tmp_path / "opt"), "parameters.t=1.0"],
        [
            "merge",
            str(cfg),
            str(tmp_path / "both"),
            "--out",
            str(tmp_path / "both"),
            "parameters.t=1.0",
        ],
    ):
        res = runner.invoke(app, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    want = load_file(str(b / "model.safetensors"))
    for name in ("pos", "opt", "both"):
        got = load_file(str(tmp_path / name / "model.safetensors"))
        assert got.keys() == want.keys()
        for k in want:  # t=1 (the override was applied in each form): parent B
            assert torch.allclose(got[k], want[k], atol=1e-6), (name, k)
    two = _run("merge", str(cfg), str(tmp_path / "x"), "--out", str(tmp_path / "y"))
    lines = [ln for ln in two.stderr.splitlines() if ln.strip()]
    assert two.returncode == 1 and len(lines) == 1 and "two output folders" in lines[0]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    zoo = _run("zoo", "build", str(tmp_path / "z1"), "--out", str(tmp_path / "z2"))
    assert zoo.returncode == 1 and "two output folders" in zoo.stderr


def test_a_missing_model_gets_the_hint_that_fits(tmp_path: Path):
    """A parent outside any zoo: fix the path or validate with --no-check-parents; a
    parent in the config's zoo (``tasks: zoo:DIR``) that is not built: build the zoo."""
    seed = _run("validate", str(EXAMPLES / "seed-run.yaml"))
    lines = [ln for ln in seed.stderr.splitlines() if ln.strip()]
    assert seed.returncode == 1 and len(lines) == 1, seed.stderr
    assert "/models/Qwen3.5-35B-A3B is not a model folder (no config.json)" in lines[0]
    assert "--no-check-parents" in lines[0] and "zoo build" not in lines[0]

    text = (EXAMPLES / "zoo-run.yaml").read_text().replace("../runs/zoo", str(tmp_path / "zoo"))
    cfg = tmp_path / "zoo-run.yaml"
    cfg.write_text(text)
    zoo = _run("validate", str(cfg))
    lines = [ln for ln in zoo.stderr.splitlines() if ln.strip()]
    assert zoo.returncode == 1 and len(lines) == 1, zoo.stderr
    assert f"parents.father: {tmp_path / 'zoo' / 'father'} is not a model folder" in lines[0]
    assert "build the zoo with `darwin zoo build` or fix the path" in lines[0]
    assert "--no-check-parents" not in lines[0]


#: command -> (its config model, its options that are not config fields)
CONFIG_OF_COMMAND = {
    "mri": ("darwinmerge.mri.config:MriConfig", {"args", "out", "base", "force"}),
}


@pytest.mark.parametrize("command", sorted(CONFIG_OF_COMMAND))
def test_flags_and_config_keys_share_names(command: str):
    """Each option of a command with a config model is the field of the same name
    (``--bootstrap-resamples`` is ``bootstrap_resamples``), and each field has its flag."""
    import importlib

    path, own = CONFIG_OF_COMMAND[command]
    module, _, name = path.partition(":")
    model = getattr(importlib.import_module(module), name)
    params = [p for p in _commands()[command].params if p.name not in own]  # type: ignore[attr-defined]
    fields = set(model.model_fields)
    for p in params:
        assert p.name in fields, f"darwin {command} {p.opts[0]}: no {name} field {p.name}"
        flag = "--" + p.name.replace("_", "-")
        assert p.opts[0] == flag, f"darwin {command}: {p.opts[0]} is field {p.name} ({flag})"
    assert fields == {p.name for p in params}, fields ^ {p.name for p in params}


def test_mri_options_errors_name_flags_that_exist():
    """An out-of-range option is named by its flag, which the command accepts; the old
    flag names still work."""
    for flag in ("--bootstrap-resamples", "--bootstrap"):
        res = _run("mri", "some-model", "--out", "nowhere", flag, "5")
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 1 and len(lines) == 1, res.stderr
        assert "--bootstrap-resamples: Input should be greater than or equal to 10" in lines[0]
    help_text = _run("mri", "--help").stdout
    for flag in ("--bootstrap-resamples", "--bootstrap-seed", "--loss-tokens"):
        assert flag in help_text


def test_mri_config_reads_its_earlier_key_names():
    from pydantic import ValidationError

    from darwinmerge.mri.config import MriConfig

    with pytest.warns(FutureWarning) as notes:
        old = MriConfig.model_validate({"seed": 3, "loss": "all"})
    assert sorted(str(n.message).split(";")[0] for n in notes) == [
        "mri.loss is the earlier name of mri.loss_tokens",
        "mri.seed is the earlier name of mri.bootstrap_seed",
    ]
    assert old == MriConfig(bootstrap_seed=3, loss_tokens="all")
    opts = old.scan_options()
    assert (opts.bootstrap_seed, opts.loss_tokens) == (3, "all")
    with pytest.raises(ValidationError, match="loss and loss_tokens are one key"):
        MriConfig.model_validate({"loss": "all", "loss_tokens": "completion"})
