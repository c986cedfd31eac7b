"""Dead-expert revival (``revive:``): exactly the scan's dead experts become the source
parent's experts, router rows included, and nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darwinmerge.errors import ConfigError
from darwinmerge.merge import Recipe, StateDictSource, merge_into, plan_merge
from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

from .conftest import read_tensors, write_recipe
from .test_bad_input import _run

FAMILY = "qwen3_5_moe"


def _pair():
    return build_tiny_model(FAMILY, seed=0), build_tiny_model(FAMILY, seed=1)


def _recipe(revive=None, **kw) -> Recipe:
    data = {
        "parents": [{"name": "father", "path": "/f"}, {"name": "mother", "path": "/m"}],
        "method": "slerp",
        "parameters": {"t": [{"component": "moe", "value": 0.3}, {"value": 0.6}]},
        **kw,
    }
    if revive is not None:
        data["revive"] = revive
    return Recipe.parse(data)


def _expert_slices(state, layer):
    p = f"model.layers.{layer}.mlp."
    return {
        "gate_up": state[p + "experts.gate_up_proj"],
        "down": state[p + "experts.down_proj"],
        "router": state[p + "gate.weight"],
    }


def _check_revival(with_rv, without, donor_state, dead):
    """Slots in ``dead`` hold the donor's expert and router row; all else = ``without``."""
    touched = set()
    for layer, experts in dead.items():
        p = f"model.layers.{layer}.mlp."
        touched |= {p + "experts.gate_up_proj", p + "experts.down_proj", p + "gate.weight"}
        got, ref, donor = (_expert_slices(s, layer) for s in (with_rv, without, donor_state))
        for key in got:
            for e in range(got[key].shape[0]):
                want = donor[key][e] if e in experts else ref[key][e]
                assert torch.equal(got[key][e], want), (layer, key, e)
    for name in with_rv:
        if name not in touched:
            assert torch.equal(with_rv[name], without[name]), name
    return touched


def test_inline_revival_transplants_exactly_the_dead_experts_and_router_rows():
    father, mother = _pair()
    sources = [StateDictSource.from_model(father), StateDictSource.from_model(mother)]
    dead = {1: [0, 2], 3: [3]}
    plain = merge_into(plan_merge(_recipe(), sources), sources, {})
    plan = plan_merge(_recipe({"source": "mother", "scan": dead}), sources)
    revived = merge_into(plan, sources, {})
    touched = _check_revival(revived, plain, mother.state_dict(), dead)
    assert len(touched) == 6
    # the revived slots really differ from the merge without revival
    assert not torch.equal(
        revived["model.layers.1.mlp.gate.weight"][0], plain["model.layers.1.mlp.gate.weight"][0]
    )
    assert any("layer 1: experts [0, 2] dead in father <- mother's" in n for n in plan.notes)
    assert any("health of mother's transplanted experts is unknown" in n for n in plan.notes)


def test_revival_into_a_per_expert_donor_from_a_fused_parent(tmp_path):
    father, mother = _pair()
    from darwinmerge.checkpoint import CheckpointReader

    path = save_tiny(mother, tmp_path / "mother", layout="per_expert")
    with CheckpointReader(path) as reader:
        sources = [StateDictSource.from_model(father), reader]
        dead = {2: [1]}
        kw = {"donor": "mother"}
        plain = merge_into(plan_merge(_recipe(**kw), sources), sources, {})
        revived = merge_into(
            plan_merge(_recipe({"source": "father", "scan": dead}, **kw), sources), sources, {}
        )
    f = father.state_dict()
    p = "model.layers.2.mlp."
    changed = {k for k in revived if not torch.equal(revived[k], plain[k])}
    assert changed == {
        p + "experts.1.gate_proj.weight",
        p + "experts.1.up_proj.weight",
        p + "experts.1.down_proj.weight",
        p + "gate.weight",
    }
    i = f[p + "experts.down_proj"].shape[2]
    assert torch.equal(
        revived[p + "experts.1.gate_proj.weight"], f[p + "experts.gate_up_proj"][1, :i]
    )
    assert torch.equal(
        revived[p + "experts.1.up_proj.weight"], f[p + "experts.gate_up_proj"][1, i:]
    )
    assert torch.equal(revived[p + "experts.1.down_proj.weight"], f[p + "experts.down_proj"][1])
    assert torch.equal(revived[p + "gate.weight"][1], f[p + "gate.weight"][1])
    assert torch.equal(revived[p + "gate.weight"][0], plain[p + "gate.weight"][0])


def test_donor_scan_skips_experts_dead_in_the_donor_too():
    father, mother = _pair()
    sources = [StateDictSource.from_model(father), StateDictSource.from_model(mother)]
    rv = {"source": "mother", "scan": {1: [0, 2]}, "donor_scan": {1: [2], 3: [1]}}
    plan = plan_merge(_recipe(rv), sources)
    revived = merge_into(plan, sources, {})
    plain = merge_into(plan_merge(_recipe(), sources), sources, {})
    _check_revival(revived, plain, mother.state_dict(), {1: [0]})
    assert any("layer 1: experts [2] skipped, dead in mother too" in n for n in plan.notes)


def test_a_recipe_transplant_wins_over_revival():
    father, mother = _pair()
    sources = [StateDictSource.from_model(father), StateDictSource.from_model(mother)]
    recipe = _recipe(
        {"source": "mother", "scan": {1: [0]}},
        transplants=[{"layer": 1, "expert": 0, "source": "father", "source_expert": 3}],
    )
    plan = plan_merge(recipe, sources)
    got = merge_into(plan, sources, {})
    f = father.state_dict()
    assert torch.equal(
        got["model.layers.1.mlp.gate.weight"][0], f["model.layers.1.mlp.gate.weight"][3]
    )
    assert any("already has a transplant" in n for n in plan.notes)


def test_bad_revive_fields_and_mismatched_inline_maps():
    with pytest.raises(ConfigError, match="revive: source and into are both 'father'"):
        _recipe({"source": "father", "scan": {1: [0]}})
    with pytest.raises(ConfigError, match="revive.source: 'ghost' is not a parent"):
        _recipe({"source": "ghost", "scan": {1: [0]}})
    with pytest.raises(ConfigError, match="revive.threshold"):
        _recipe({"source": "mother", "scan": {1: [0]}, "threshold": 0})
    father, mother = _pair()
    sources = [StateDictSource.from_model(father), StateDictSource.from_model(mother)]
    with pytest.raises(ConfigError, match="layer 1 lists expert 4 but the parents have 4 experts"):
        plan_merge(_recipe({"source": "mother", "scan": {1: [4]}}), sources)
    with pytest.raises(ConfigError, match="layer 9 is not a sparse"):
        plan_merge(_recipe({"source": "mother", "scan": {9: [0]}}), sources)


# ------------------------------------------------------------- saved MRI scans


def _scan(model, tmp_path, name):
    from darwinmerge.mri import builtin_probes, run_scan, tokenize_probes
    from darwinmerge.mri.probes import ProbeSet

    full = builtin_probes()
    probes = ProbeSet({c: full.texts[c][:2] for c in list(full.texts)[:3]})
    batches = tokenize_probes(
        probes, lambda t: [b % 128 for b in t.encode()], max_length=32, batch_size=4
    )
    scan = run_scan(model, batches, model_name=name)
    scan.save(tmp_path / name)
    return scan, tmp_path / name


def test_saved_scan_revives_the_experts_below_threshold_end_to_end(tmp_path, capsys):
    import darwinmerge.mri.revival  # noqa: F401 - the CLI imports it the same way

    father, mother = _pair()
    scan, folder = _scan(father, tmp_path, "father_scan")
    util = scan.utilisation
    threshold = float(np.sort(util.ravel())[util.size // 3]) + 1e-9  # a third are "dead"
    assert 0 < threshold <= 1
    want = {
        layer: [e for e in range(util.shape[1]) if util[s, e] < threshold]
        for s, layer in enumerate(scan.sparse_layers)
    }
    assert sum(map(len, want.values())) >= util.size // 3
    sources = [StateDictSource.from_model(father), StateDictSource.from_model(mother)]
    rv = {"source": "mother", "scan": str(folder), "threshold": threshold}
    revived = merge_into(plan_merge(_recipe(rv), sources), sources, {})
    plain = merge_into(plan_merge(_recipe(), sources), sources, {})
    _check_revival(revived, plain, mother.state_dict(), want)

    # the CLI: validate lists the revived experts per layer, merge writes the same child
    a = save_tiny(father, tmp_path / "father", layout="fused")
    b = save_tiny(mother, tmp_path / "mother", layout="fused")
    cfg = write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "father", "path": str(a)}, {"name": "mother", "path": str(b)}],
        method="slerp",
        parameters={"t": [{"component": "moe", "value": 0.3}, {"value": 0.6}]},
        revive={"source": "mother", "scan": "father_scan", "threshold": threshold},
    )
    assert _run(["validate", str(cfg)]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    for layer, experts in want.items():
        if experts:
            assert f"layer {layer}: experts {experts} dead in father" in err, err
    assert _run(["merge", str(cfg), str(tmp_path / "child")]) == 0
    on_disk = read_tensors(tmp_path / "child")
    for name, t in revived.items():
        assert torch.equal(on_disk[name], t), name


def test_a_scan_of_another_shape_is_refused_in_one_line(tmp_path, capsys):
    import darwinmerge.mri.revival  # noqa: F401

    father, mother = _pair()
    other = build_tiny_model(FAMILY, seed=3, num_experts=8)
    _, folder = _scan(other, tmp_path, "other_scan")
    sources = [StateDictSource.from_model(father), StateDictSource.from_model(mother)]
    with pytest.raises(ConfigError) as info:
        plan_merge(_recipe({"source": "mother", "scan": str(folder)}), sources)
    msg = str(info.value)
    assert "\n" not in msg
    assert "has 4 layers x 8 experts but the parents have 4 layers x 4 experts" in msg
    shallow = build_tiny_model(FAMILY, seed=3, num_layers=3)
    _, folder = _scan(shallow, tmp_path, "shallow_scan")
    with pytest.raises(ConfigError, match="has 3 layers x 4 experts"):
        plan_merge(_recipe({"source": "mother", "scan": str(folder)}), sources)
    with pytest.raises(ConfigError, match="not found"):
        plan_merge(_recipe({"source": "mother", "scan": str(tmp_path / "nope")}), sources)


def test_revival_is_not_exported_to_mergekit():
    from darwinmerge.merge import recipe_to_mergekit

    with pytest.raises(ConfigError, match="revive"):
        recipe_to_mergekit(_recipe({"source": "mother", "scan": {1: [0]}}))


def test_revive_round_trips_through_yaml_and_resolves_paths_against_the_recipe(tmp_path):
    r = _recipe({"source": "mother", "scan": {1: [0, 2]}, "donor_scan": "scans/father"})
    assert Recipe.from_yaml(r.to_yaml()) == r
    fixed = r.resolved_paths(tmp_path)
    assert fixed.revive.donor_scan == str((tmp_path / "scans/father").resolve())
    assert fixed.revive.scan == {1: [0, 2]}
