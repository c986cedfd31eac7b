"""A flag, its config key and its field share one name, and one default.

Walks every option of every ``darwin`` command (click introspection of
``darwinmerge.cli.app``): an option is the field of the same name of a config section its
command maps to (:data:`SECTIONS`, with the section's flag prefix), with the field's
default (``None``: the flag is unset and the config's value holds); or one of the few
flags named apart from their field (:data:`KEYED`, each with a reason); or not a config
field at all (:data:`NOT_CONFIG`, each with a reason). Anything else fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from darwinmerge.evolve.config import (
    BackendConfig,
    EvolveConfig,
    FitnessConfig,
    WorkersConfig,
)
from darwinmerge.health.options import HealthOptions, LocalizeOptions
from darwinmerge.merge.options import MergeOptions
from darwinmerge.mri.config import MriConfig
from darwinmerge.run.config import FinalConfig, HealthSection


@dataclass(frozen=True)
class Section:
    model: type[BaseModel]
    prefix: str = ""
    #: the fields the command's flags may set (None: every field)
    only: frozenset[str] | None = None
    #: every field (of ``only``) must have its flag
    complete: bool = False

    def fields(self) -> list[str]:
        names = list(self.model.model_fields)
        return [n for n in names if self.only is None or n in self.only]


def _zoo_config() -> type[BaseModel]:
    from darwinmerge.zoo.build import ZooConfig

    return ZooConfig


#: command -> the config sections its flags set
SECTIONS: dict[str, list[Section]] = {
    "mri": [Section(MriConfig, complete=True)],
    "health": [
        Section(HealthOptions, complete=True),
        Section(LocalizeOptions, "localize_", complete=True),
        Section(
            MriConfig,
            only=frozenset(
                {
                    "probes",
                    "tokenizer",
                    "max_length",
                    "batch_size",
                    "loss_tokens",
                    "device",
                    "dtype",
                }
            ),
            complete=True,
        ),
        Section(HealthSection, only=frozenset({"repair"}), complete=True),
        Section(EvolveConfig, only=frozenset({"tasks"})),
    ],
    "eval": [
        Section(EvolveConfig, only=frozenset({"tasks", "test_fraction"}), complete=True),
        Section(FitnessConfig, only=frozenset({"scorer"}), complete=True),
        Section(
            BackendConfig,
            only=frozenset({"batch_size", "max_new_tokens", "device", "dtype"}),
            complete=True,
        ),
        Section(FinalConfig, only=frozenset({"alpha"}), complete=True),
    ],
    "evolve": [Section(WorkersConfig, only=frozenset({"ray_address"}), complete=True)],
    "merge": [Section(MergeOptions, only=frozenset({"direct_reads"}), complete=True)],
}

#: (command, parameter) -> (section model, field, why the flag is named apart from it)
KEYED: dict[tuple[str, str], tuple[type[BaseModel], str, str]] = {
    ("eval", "backend"): (
        BackendConfig,
        "name",
        "--backend NAME is the key backend.name; a flag --name would not say of what",
    ),
    ("evolve", "workers"): (
        WorkersConfig,
        "n",
        "--workers N is the override workers.n=N; --n would not say of what",
    ),
}

#: (command or "*", parameter) -> why it is not a config field
NOT_CONFIG: dict[tuple[str, str], str] = {
    ("*", "out"): "where the command writes, not what it computes",
    ("*", "out_option"): "--out, the same folder as the positional OUT",
    ("*", "force"): "whether an existing output may be replaced",
    ("*", "wide"): "layout of the printed table",
    ("mri", "base"): "an input model (compare: task vectors)",
    ("health", "parents"): "input models",
    ("health", "mri"): "an input folder of earlier scans",
    ("health", "recipe"): "an input file",
    ("health", "per_category"): "--repair's fitness subset; a run takes evolve.fitness.subset",
    ("health", "rounds"): "most repair rounds, a keyword of run_health, not a config key",
    ("health", "localize"): "turns the localization scans off; not a config key",
    ("eval", "split"): "which split of the tasks eval scores (a run scores both)",
    ("eval", "limit"): "a quick-look item cap of eval only",
    ("eval", "answer_regex"): "an exact-match scorer argument, eval only",
    ("eval", "tokenizer"): "an input folder",
    ("evolve", "resume"): "continue the study in --out",
    ("run", "stop_after"): "end after a phase; how far to run, not what",
    ("merge", "device"): "merge engine option (merge_to_disk keyword)",
    ("merge", "threads"): "merge engine option (merge_to_disk keyword)",
    ("merge", "allow_pickle"): "merge engine option (merge_to_disk keyword)",
    ("merge", "check_finite"): "merge engine option (merge_to_disk keyword)",
    ("merge", "shard_size"): "writer option (merge_to_disk max_shard_bytes)",
    ("merge", "page_cache"): "merge engine option (merge_to_disk keyword)",
    ("merge", "export_mergekit"): "a second output file",
    ("merge", "kernel"): "NAME=on|off, one entry of options.kernels (a dict of kernel -> on)",
    ("merge", "kernels"): "on|off: every entry of options.kernels at once ({} = all on)",
    ("validate", "check_parents"): "whether validate opens the parents",
    ("demo", "zoo"): "the zoo folder the demo builds or reuses",
    ("demo", "trials"): "the demo's own budget per evolution (16), not evolve.trials (40)",
    ("inspect", "tensors"): "output detail",
    ("inspect", "as_json"): "output format",
    ("report", "screenshot"): "a second output file",
    ("report", "width"): "screenshot width",
    ("zoo suite", "zoo"): "an input folder",
    ("zoo suite", "only"): "which problems to build",
    ("zoo suite", "jobs"): "how many problems build at once (a performance knob, not a config)",
}


def _commands() -> dict[str, Any]:
    import typer.main

    from darwinmerge.cli.app import app

    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                walk(cmd, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = cmd

    walk(typer.main.get_command(app), "")
    return found


def _options(cmd: Any) -> list[Any]:
    from typer.core import TyperArgument

    return [p for p in cmd.params if not isinstance(p, TyperArgument)]


def _sections(command: str) -> list[Section]:
    if command == "zoo build":
        return [Section(_zoo_config(), only=frozenset({"seed"}), complete=True)]
    return SECTIONS.get(command, [])


def _field_default(model: type[BaseModel], field: str) -> Any:
    return model.model_fields[field].get_default(call_default_factory=True)


def _same_default(flag: Any, field: Any) -> bool:
    if flag is None:  # unset: the config's (the model's) value holds
        return True
    if isinstance(field, tuple):
        field = list(field)
    return bool(flag == field)


def test_every_option_is_a_field_with_its_default_or_listed_with_a_reason() -> None:
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    commands = _commands()
    assert {"mri", "health", "eval", "evolve", "run", "merge", "zoo build"} <= set(commands)
    for command, cmd in sorted(commands.items()):
        sections = _sections(command)
        for p in _options(cmd):
            where = f"darwin {command} {p.opts[0]}"
            for key in ((command, p.name), ("*", p.name)):
                if key in NOT_CONFIG:
                    used.add(key)
                    break
            else:
                if (command, p.name) in KEYED:
                    model, field, _ = KEYED[(command, p.name)]
                    used.add((command, p.name))
                    if not _same_default(p.default, _field_default(model, field)):
                        problems.append(
                            f"{where}: default {p.default!r}, {model.__name__}."
                            f"{field} has {_field_default(model, field)!r}"
                        )
                    continue
                match = [
                    s
                    for s in sections
                    if p.name.startswith(s.prefix) and p.name[len(s.prefix) :] in s.fields()
                ]
                if not match:
                    problems.append(
                        f"{where}: parameter {p.name!r} is no field of "
                        f"{[s.model.__name__ for s in sections]} and not listed"
                    )
                    continue
                section = match[0]
                field = p.name[len(section.prefix) :]
                flag = "--" + p.name.replace("_", "-")
                if p.opts[0] != flag:
                    problems.append(
                        f"{where}: field {section.model.__name__}.{field} wants the flag {flag}"
                    )
                want = _field_default(section.model, field)
                if not _same_default(p.default, want):
                    problems.append(
                        f"{where}: default {p.default!r}, "
                        f"{section.model.__name__}.{field} has {want!r}"
                    )
        names = {p.name for p in _options(cmd)}
        for s in sections:
            if s.complete:
                missing = [f for f in s.fields() if s.prefix + f not in names]
                problems += [
                    f"darwin {command}: no flag for {s.model.__name__}.{f}" for f in missing
                ]
    stale = (set(NOT_CONFIG) | set(KEYED)) - used
    problems += [f"listed but no such option: {key}" for key in sorted(stale)]
    assert not problems, "\n".join(problems)


def test_every_listed_flag_has_a_reason() -> None:
    assert all(reason.strip() for reason in NOT_CONFIG.values())
    assert all(reason.strip() for *_, reason in KEYED.values())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["mri", "m", "--out", "o", "--bootstrap", "5"], "--bootstrap-resamples: Input should"),
        (
            ["health", "c", "--parents", "a", "b", "--out", "o", "--material", "-1"],
            "--material: Input should be greater than or equal to 0",
        ),
        (
            ["health", "c", "--parents", "a", "b", "--out", "o", "--localize-layers", "0"],
            "--localize-max-layers: Input should be greater than or equal to 1",
        ),
        (
            ["health", "c", "--parents", "a", "b", "--out", "o", "--loss", "answer"],
            "--loss-tokens: Input should be 'completion' or 'all'",
        ),
    ],
)
def test_a_bad_flag_value_names_the_flag(argv: list[str], needle: str) -> None:
    from typer.testing import CliRunner

    from darwinmerge.cli.app import app
    from darwinmerge.errors import ConfigError

    res = CliRunner().invoke(app, argv)
    assert isinstance(res.exception, ConfigError), res.output
    msg = str(res.exception)
    assert msg.startswith("invalid options: ") and needle in msg and "\n" not in msg, msg
