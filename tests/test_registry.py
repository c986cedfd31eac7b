import pytest

from darwinmerge.errors import UnknownNameError
from darwinmerge.registry import Registry


def test_registry_refuses_duplicates_and_suggests():
    reg: Registry[int] = Registry("merge method")
    reg.add("slerp", 1)
    reg.add("linear", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("slerp", 3)
    with pytest.raises(UnknownNameError) as info:
        reg.get("slrep")
    assert "did you mean 'slerp'" in str(info.value)
    assert "known: linear, slerp" in str(info.value)
    assert reg.get("linear") == 2
    assert list(reg) == ["linear", "slerp"]


def test_every_plugin_table_names_the_module_that_registers_the_name():
    from darwinmerge.evaluate.tasks import TASK_SOURCES
    from darwinmerge.merge.revive import SCAN_READERS
    from darwinmerge.mri.probes import PROBE_SETS

    tables = {reg.kind: reg for reg in (TASK_SOURCES, SCAN_READERS, PROBE_SETS)}
    assert {k: dict(r.plugins) for k, r in tables.items()} == {
        "task source": {
            "zoo": "darwinmerge.zoo.tasks",
            "lmeval": "darwinmerge.evaluate.lmeval_source",
        },
        "scan reader": {"mri": "darwinmerge.mri.revival"},
        "probe set": {"zoo": "darwinmerge.zoo.probes"},
    }
    for reg in tables.values():
        for name, module in reg.plugins.items():
            assert reg.get(name).__module__ == module, (reg.kind, name)


def test_a_decorator_registers_and_plugins_count_as_known():
    reg: Registry[object] = Registry("section", plugins={"later": "darwinmerge.errors"})

    @reg.register("one")
    def one() -> int:
        return 1

    assert reg.get("one") is one and reg.registered() == ["one"]
    assert reg.names() == ["later", "one"] and "later" in reg and len(reg) == 2
    with pytest.raises(UnknownNameError, match="did you mean 'one'"):
        reg.get("onw")
    with pytest.raises(UnknownNameError, match="unknown section 'later'"):
        reg.get("later")  # the module imported but registered nothing under that name


def test_every_genome_space_registers_config_factory_and_prior_in_one_place():
    from darwinmerge.evolve import SPACES, parse_space_config

    assert set(SPACES.plugins) == {"seed", "layerwise", "mergekit_evolve"}
    for name, module in SPACES.plugins.items():
        kind = SPACES.get(name)
        assert kind.name == name and kind.build.__module__ == module
        assert type(parse_space_config({"kind": name})) is kind.config
        assert kind.prior.__name__ == f"{name.split('_')[0]}_prior"
    assert sorted(SPACES.registered()) == sorted(SPACES.plugins)
