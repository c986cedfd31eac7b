"""The one config loader: ``key=value`` overrides, one error format (file, key path,
did-you-mean), typed run config sections, the run ledger's config unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from darwinmerge.config import (
    apply_overrides,
    close_match_hint,
    known_keys_at,
    load_config,
    read_yaml_config,
    validate_config,
)
from darwinmerge.errors import ConfigError
from darwinmerge.evolve.config import EvolveConfig, EvolveSection, load_evolve_config
from darwinmerge.health.options import HealthOptions
from darwinmerge.merge.recipe import Recipe
from darwinmerge.mri.config import MriConfig
from darwinmerge.run.config import RunConfig, load_run_config
from tests.run.conftest import run_config_data, write_config


def _fake_zoo(tmp_path: Path) -> Path:
    zoo = tmp_path / "zoo"
    for name in ("father", "mother", "base"):
        (zoo / name).mkdir(parents=True)
        (zoo / name / "config.json").write_text("{}")
        (zoo / name / "tokenizer.json").write_text("{}")
    return zoo


def test_overrides_set_nested_keys_list_items_and_parse_values_as_yaml() -> None:
    data = {"a": {"b": 1}, "slices": [{"t": 0.1}, {"t": 0.2}]}
    out = apply_overrides(
        data, ["a.b=3", "a.c=[x, y]", "slices.1.t=0.7", "new.deep=null"], source="f"
    )
    assert out == {
        "a": {"b": 3, "c": ["x", "y"]},
        "slices": [{"t": 0.1}, {"t": 0.7}],
        "new": {"deep": None},
    }
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["novalue"], source="f")
    with pytest.raises(ConfigError, match="has no field 't' to descend into"):
        apply_overrides({"a": 1}, ["a.t.x=1"], source="f")


def test_read_yaml_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        read_yaml_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping at the top level"):
        read_yaml_config(bad)


def test_did_you_mean_for_an_unknown_key_at_any_depth(tmp_path: Path) -> None:
    """One format: FILE: key.path: message (did you mean 'x'?), for a nested section,
    a typed run section, a dict of models and the top level."""
    assert close_match_hint("optimzer", ["optimizer", "trials"]) == " (did you mean 'optimizer'?)"
    assert close_match_hint("zzz", ["a", "b"]) == " (known: a, b)"
    assert "optimizer" in known_keys_at(EvolveConfig, [])
    assert "popsize" in known_keys_at(EvolveConfig, ["optimizer"])
    assert "material" in known_keys_at(RunConfig, ["health", "options"])
    assert known_keys_at(Recipe, ["parents", 0]) == ["name", "parameters", "path"]  # list item
    _fake_zoo(tmp_path)
    path = write_config(tmp_path / "run.yaml", run_config_data(Path("zoo")))
    cases = {
        "evolve.optimizer.popsise=4": "evolve.optimizer.popsise: Extra inputs are not "
        "permitted (did you mean 'popsize'?)",
        "health.options.materal=0.1": "health.options.materal: Extra inputs are not "
        "permitted (did you mean 'material'?)",
        "mri.bootstrap_resample=50": "mri.bootstrap_resample: Extra inputs are not "
        "permitted (did you mean 'bootstrap_resamples'?)",
        "evolv.trials=3": "evolv: Extra inputs are not permitted (did you mean 'evolve'?)",
        # a tagged union (the genome space) is walked through its tag
        "evolve.space.max_block=3": "evolve.space: seed.max_block: Extra inputs are not "
        "permitted (did you mean 'max_blocks'?)",
    }
    for override, needle in cases.items():
        with pytest.raises(ConfigError) as err:
            load_run_config(path, [override])
        msg = str(err.value)
        assert msg.startswith(f"{path}: ") and needle in msg and "\n" not in msg, msg


def test_every_problem_of_a_file_on_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(MriConfig, {"batch_size": 0, "dtype": "int8", "colour": 1}, source="x.yaml")
    msg = str(err.value)
    assert msg.startswith("x.yaml: ")
    for part in ("batch_size: Input should be greater", "dtype: dtype must be one of", "colour"):
        assert part in msg
    assert msg.count(";") == 2


def test_recipe_unknown_key_gets_its_did_you_mean() -> None:
    data = {"parents": [{"name": "a", "path": "x"}, {"name": "b", "path": "y"}]}
    with pytest.raises(ConfigError, match=r"<r>: methd: .*\(did you mean 'method'\?\)"):
        Recipe.parse({**data, "method": "linear", "methd": "slerp"}, source="<r>")


def test_run_config_sections_are_typed_and_validated_once(tmp_path: Path) -> None:
    zoo = _fake_zoo(tmp_path)
    data = run_config_data(Path("zoo"))
    data["health"]["options"] = {"material": 0.1}
    cfg = load_run_config(write_config(tmp_path / "run.yaml", data))
    assert isinstance(cfg.mri, MriConfig) and cfg.mri.bootstrap_resamples == 20
    assert isinstance(cfg.evolve, EvolveSection) and cfg.evolve.trials == 3
    assert isinstance(cfg.health.options, HealthOptions)
    assert cfg.health_options().material == 0.1
    assert cfg.health_options().move_step == HealthOptions().move_step
    mri = cfg.mri_config()
    assert mri.probes == (f"zoo@{zoo}",) and mri.max_length == 64
    ev = cfg.evolve_config(tmp_path / "mri")
    assert isinstance(ev, EvolveConfig)
    assert ev.backend.batch_size == 8 and ev.optimizer.popsize == 4
    assert ev.parents["father"] == str(zoo / "father") and ev.select.write_child


def test_ledger_keeps_the_sections_as_written(tmp_path: Path) -> None:
    """run.json's config has the shape it had before the sections were typed (the keys
    given, no defaults filled in), so older run folders resume."""
    _fake_zoo(tmp_path)
    data = run_config_data(Path("zoo"))
    cfg = load_run_config(write_config(tmp_path / "run.yaml", data))
    ledger = cfg.ledger_data()
    assert ledger["mri"] == data["mri"]
    assert ledger["evolve"] == data["evolve"]
    assert ledger["health"] == {"enabled": True, "repair": False, "options": {}}
    assert ledger["prior"] == {"kind": "mri", "target": "reasoning", "trust": "fixed"}
    assert ledger["parents"] == cfg.parents and ledger["final"]["alpha"] == 0.05
    assert yaml.safe_load(yaml.safe_dump(ledger)) == ledger  # plain JSON values


def test_evolve_and_run_share_the_loader(tmp_path: Path) -> None:
    """Both resolve relative paths against the file and check the parents the same way."""
    zoo = _fake_zoo(tmp_path)
    ev_data = {"parents": {"f": "zoo/father", "m": "zoo/mother"}, "space": {"kind": "seed"}}
    path = write_config(tmp_path / "ev.yaml", ev_data)
    ev = load_evolve_config(path, ["trials=5"])
    assert ev == load_config(path, EvolveConfig, ["trials=5"])
    assert ev.trials == 5 and ev.parents["f"] == str(zoo / "father")
    missing = write_config(tmp_path / "ev2.yaml", {**ev_data, "parents": {"f": "a", "m": "b"}})
    with pytest.raises(ConfigError, match=r"parents\.f: .* is not a model folder"):
        load_evolve_config(missing)
    assert load_evolve_config(missing, check_paths=False).parents["f"] == str(tmp_path / "a")


def test_every_section_is_frozen_and_forbids_unknown_keys_at_every_depth() -> None:
    """STYLE 5: each section model, and each model nested in it, is frozen with
    ``extra="forbid"`` (an unknown key is an error with its did-you-mean, never ignored)."""
    from darwinmerge.config import SECTIONS, section_model
    from darwinmerge.config.errors import _models_in
    from darwinmerge.errors import UnknownNameError

    seen: set[type] = set()

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        cfg = model.model_config  # type: ignore[attr-defined]
        assert cfg.get("frozen") and cfg.get("extra") == "forbid", model.__name__
        for field in model.model_fields.values():  # type: ignore[attr-defined]
            stack = [field.annotation]
            while stack:
                ann = stack.pop()
                for sub in _models_in(ann):
                    walk(sub)
                stack += list(getattr(ann, "__args__", ()))

    for name in SECTIONS:
        walk(section_model(name))
    assert len(seen) > len(SECTIONS)  # nested sections were walked too
    with pytest.raises(UnknownNameError, match="did you mean 'health'"):
        section_model("helth")


def test_a_run_folder_written_before_the_typed_sections_resumes(tmp_path: Path) -> None:
    """A ledger whose config holds the sections as written, with the earlier MRI key
    ``loss``, is the same config as the typed one: every finished phase is kept."""
    from darwinmerge.run import RunLedger

    _fake_zoo(tmp_path)
    data = run_config_data(Path("zoo"))
    data["mri"] = {"loss_tokens": "completion", "max_length": 64}
    cfg = load_run_config(write_config(tmp_path / "run.yaml", data))
    old = cfg.ledger_data()
    old["mri"] = {"loss": "completion", "max_length": 64}  # the earlier key, as written
    old["health"] = {"enabled": True, "repair": False, "options": {}}
    run_dir = tmp_path / "run"
    ledger = RunLedger.open(run_dir, old)
    for phase in ("mri", "prior", "evolve"):
        ledger.mark(phase, seconds=1.0)
    assert list(RunLedger.open(run_dir, cfg.ledger_data()).phases) == ["mri", "prior", "evolve"]
    other = {**cfg.ledger_data(), "mri": {"loss_tokens": "all", "max_length": 64}}
    with pytest.raises(ConfigError, match=r"another config \(mri changed\)"):
        RunLedger.open(run_dir, other)


def test_keys_a_run_config_shares_with_an_evolve_config_have_one_default() -> None:
    """``test_fraction``, ``base`` (and each run-owned key) mean the same in both files."""
    from darwinmerge.evolve.config import RUN_OWNED_KEYS

    assert RUN_OWNED_KEYS == ("parents", "base", "tasks", "test_fraction", "prior")
    for key in ("base", "test_fraction"):
        run, ev = RunConfig.model_fields[key], EvolveConfig.model_fields[key]
        assert run.default == ev.default and run.metadata == ev.metadata, key
    assert set(RunConfig.model_fields) >= set(RUN_OWNED_KEYS)
    assert not set(EvolveSection.model_fields) & set(RUN_OWNED_KEYS)
