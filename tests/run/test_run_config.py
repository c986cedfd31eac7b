"""RunConfig: every section checked at parse time, one line; the ledger's resume rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from darwinmerge.errors import ConfigError, OutputExistsError
from darwinmerge.run import RunLedger, load_run_config
from tests.run.conftest import run_config_data, write_config


def _fake_zoo(tmp_path: Path) -> Path:
    zoo = tmp_path / "zoo"
    for name in ("father", "mother", "base"):
        (zoo / name).mkdir(parents=True)
        (zoo / name / "config.json").write_text("{}")
        (zoo / name / "tokenizer.json").write_text("{}")
    return zoo


def test_valid_config_resolves_relative_paths(tmp_path: Path) -> None:
    zoo = _fake_zoo(tmp_path)
    data = run_config_data(Path("zoo"))
    cfg = load_run_config(write_config(tmp_path / "run.yaml", data))
    assert cfg.parents == {"father": str(zoo / "father"), "mother": str(zoo / "mother")}
    assert cfg.base == str(zoo / "base")
    assert cfg.probes == [f"zoo@{zoo}"]
    assert cfg.tasks == f"zoo:{zoo}"
    ec = cfg.evolve_config(tmp_path / "mri")
    assert ec.prior.kind == "mri" and ec.prior.scans == str(tmp_path / "mri")
    assert ec.select.write_child  # Phase 3 reads the child
    assert cfg.mri_config().probes == (f"zoo@{zoo}",)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["evolve"].update(trials=0), "evolve.trials: Input should be greater"),
        (lambda d: d["evolve"].update(parents={"a": "x"}), "set by the run itself"),
        (lambda d: d["evolve"]["space"].update(kind="nope"), "evolve.space"),
        (lambda d: d["mri"].update(dtype="int8"), "mri.dtype: dtype must be one of"),
        (lambda d: d["mri"].update(probes=["x"]), "give them at the top level"),
        (
            lambda d: d["health"].update(options={"material": -1}),
            "health.options.material: Input should",
        ),
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d["parents"].update(third="x"), "parents"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    _fake_zoo(tmp_path)
    data = run_config_data(Path("zoo"))
    edit(data)
    with pytest.raises(ConfigError) as err:
        load_run_config(write_config(tmp_path / "run.yaml", data))
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_parent_without_tokenizer_files_named(tmp_path: Path) -> None:
    zoo = _fake_zoo(tmp_path)
    (zoo / "mother" / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"parents\.mother: .* has no tokenizer files"):
        load_run_config(write_config(tmp_path / "run.yaml", run_config_data(Path("zoo"))))


def test_missing_parent_folder_named(tmp_path: Path) -> None:
    data = run_config_data(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"parents\.father: .*nowhere/father is not a model"):
        load_run_config(write_config(tmp_path / "run.yaml", data))


def test_ledger_keeps_finished_phases_and_refuses_another_config(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = {"tasks": "zoo", "final": {"alpha": 0.05}, "evolve": {"trials": 4, "space": {}}}
    ledger = RunLedger.open(run_dir, config)
    for phase in ("mri", "prior", "evolve", "health", "final"):
        ledger.mark(phase, seconds=1.0)
    # the same config: every finished phase is kept
    assert list(RunLedger.open(run_dir, config).phases) == [
        "mri",
        "prior",
        "evolve",
        "health",
        "final",
    ]
    # a new final table reopens only the final phase
    alpha = {**config, "final": {"alpha": 0.01}}
    assert list(RunLedger.open(run_dir, alpha).phases) == ["mri", "prior", "evolve", "health"]
    # a larger budget reopens the search (its study continues) and what follows it
    more = {**alpha, "evolve": {**config["evolve"], "trials": 9}}
    again = RunLedger.open(run_dir, more)
    assert list(again.phases) == ["mri", "prior"]
    assert json.loads((run_dir / "run.json").read_text())["config"] == more
    with pytest.raises(ConfigError, match=r"evolve\.space changed"):
        RunLedger.open(run_dir, {**more, "evolve": {"trials": 9, "space": {"kind": "x"}}})
    with pytest.raises(ConfigError, match="tasks changed"):
        RunLedger.open(run_dir, {**more, "tasks": "other"})
    fresh = RunLedger.open(run_dir, {**more, "tasks": "other"}, force=True)
    assert fresh.phases == {}


def test_ledger_never_deletes_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="not a darwin run folder") as err:
            RunLedger.open(tmp_path, {}, force=force)
        assert "--force" not in str(err.value)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    afile = tmp_path / "keep.txt"
    with pytest.raises(OutputExistsError, match="is a file; give a folder"):
        RunLedger.open(afile, {})
