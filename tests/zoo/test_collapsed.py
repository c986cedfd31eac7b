"""The second mother (``mother_collapsed``): built from the saved father, cached apart from
base / father / mother, added to an older zoo without touching the other parents."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from darwinmerge.errors import OutputExistsError
from darwinmerge.zoo.build import (
    MOTHER_COLLAPSED,
    PARENTS,
    CollapseConfig,
    CollapsePhase,
    build_zoo,
    micro_config,
    read_manifest,
    state_dict_hash,
)
from darwinmerge.zoo.train import TrainConfig, routing_balance


def _file_digests(out: Path) -> dict[str, str]:
    """SHA-256 of every file of the three parents and the tasks (bytes on disk)."""
    files = [p for name in (*PARENTS, "tasks") for p in sorted((out / name).rglob("*"))]
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cold") / "z"
    return out, build_zoo(out, micro_config(seed=1))


def test_cold_build_writes_her_beside_the_others(cold: tuple[Path, dict]) -> None:
    from transformers import AutoModelForCausalLM

    out, manifest = cold
    entry = manifest[MOTHER_COLLAPSED]
    assert read_manifest(out) == manifest
    assert entry["config"] == micro_config(seed=1).collapsed.model_dump(mode="json")
    assert entry["father_sha256"] == manifest["weights_sha256"]["father"]
    assert "collapsed" not in manifest["config"]  # the pair's cache key is unchanged
    model = AutoModelForCausalLM.from_pretrained(out / MOTHER_COLLAPSED)
    assert state_dict_hash(model.state_dict()) == entry["weights_sha256"]
    assert entry["weights_sha256"] not in manifest["weights_sha256"].values()
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_she_differs_from_the_father_only_where_her_phases_train(cold: tuple[Path, dict]) -> None:
    from safetensors.torch import load_file

    out, manifest = cold
    assert [t["steps"] for t in manifest[MOTHER_COLLAPSED]["train"]] == [2, 1]
    father = load_file(out / "father" / "model.safetensors")
    her = load_file(out / MOTHER_COLLAPSED / "model.safetensors")
    assert father.keys() == her.keys()
    changed = {k for k in father if not torch.equal(father[k], her[k])}
    # micro: routers + their input norms, then the routed experts; 4 MoE layers
    for i in range(4):
        assert f"model.layers.{i}.mlp.gate.weight" in changed
        assert f"model.layers.{i}.post_attention_layernorm.weight" in changed
        assert any(k.startswith(f"model.layers.{i}.mlp.experts.") for k in changed)
    groups = ("mlp.gate.", "post_attention_layernorm", "mlp.experts.")
    assert all(any(g in k for g in groups) for k in changed)


def test_old_zoo_gets_only_her_and_keeps_the_others_bit_identical(
    cold: tuple[Path, dict], tmp_path: Path
) -> None:
    _, cold_manifest = cold
    out = tmp_path / "z"
    old = build_zoo(out, micro_config(seed=1).model_copy(update={"collapsed": None}))
    assert MOTHER_COLLAPSED not in old and not (out / MOTHER_COLLAPSED).exists()
    before = _file_digests(out)
    stamps = {p: (out / p).stat().st_mtime_ns for p in before}
    added = build_zoo(out, micro_config(seed=1))
    assert _file_digests(out) == before
    assert {p: (out / p).stat().st_mtime_ns for p in before} == stamps
    assert added["weights_sha256"] == old["weights_sha256"] == cold_manifest["weights_sha256"]
    assert added["config"] == old["config"] and added["seconds"] == old["seconds"]
    # the same weights as the cold build, which trained her in the same way from its father
    assert (
        added[MOTHER_COLLAPSED]["weights_sha256"]
        == (cold_manifest[MOTHER_COLLAPSED]["weights_sha256"])
    )
    assert json.loads((out / "zoo.json").read_text()) == added
    assert not any(p.name.startswith(".") for p in out.iterdir())
    # and now she is cached too
    stamp = (out / MOTHER_COLLAPSED / "model.safetensors").stat().st_mtime_ns
    assert build_zoo(out, micro_config(seed=1)) == added
    assert (out / MOTHER_COLLAPSED / "model.safetensors").stat().st_mtime_ns == stamp


def test_her_other_config_is_refused_then_rebuilt_alone_with_force(
    cold: tuple[Path, dict], tmp_path: Path
) -> None:
    import shutil

    src, manifest = cold
    out = tmp_path / "z"
    shutil.copytree(src, out)
    before = _file_digests(out)
    phase = CollapsePhase(
        train=TrainConfig(
            steps=3, lr=0.01, warmup=0, batch_size=2, seq_len=64, train_only=("mlp.gate.",)
        ),
        router_balance=0.0,
    )
    other = micro_config(seed=1).model_copy(update={"collapsed": CollapseConfig(phases=(phase,))})
    with pytest.raises(OutputExistsError, match="mother_collapsed.*--force"):
        build_zoo(out, other)
    rebuilt = build_zoo(out, other, force=True)
    assert _file_digests(out) == before
    assert rebuilt[MOTHER_COLLAPSED]["train"][0]["steps"] == 3
    assert (
        rebuilt[MOTHER_COLLAPSED]["weights_sha256"]
        != (manifest[MOTHER_COLLAPSED]["weights_sha256"])
    )


def test_routing_balance_values() -> None:
    E = 8
    uniform = torch.zeros(10, E)  # P_e = 1/E whatever f is -> E * sum f / E = 1
    assert float(routing_balance([uniform], top_k=2)) == pytest.approx(1.0, rel=1e-6)
    # every token: experts 0 and 1 with probability ~1/2 each -> E * (0.5*0.5 + 0.5*0.5)
    two = torch.full((10, E), -30.0)
    two[:, :2] = 0.0
    assert float(routing_balance([two], top_k=2)) == pytest.approx(E / 2, rel=1e-6)
    # averaged over layers
    both = float(routing_balance([uniform, two], top_k=2))
    assert both == pytest.approx((1.0 + E / 2) / 2, rel=1e-6)


def test_negative_balance_moves_probability_to_the_loaded_experts() -> None:
    torch.manual_seed(0)
    z = (torch.randn(64, 4) * 0.1).requires_grad_(True)
    z.data[:, 0] += 0.5  # expert 0 is chosen most often
    p0 = torch.softmax(z.detach(), -1).mean(0)
    (-routing_balance([z], top_k=1)).backward()
    assert z.grad is not None
    p1 = torch.softmax(z.detach() - 0.5 * z.grad, -1).mean(0)
    assert p1[0] > p0[0]
    low = int(p0[1:].argmin()) + 1
    assert p1[low] < p0[low]


def test_the_routing_criterion_is_measured_and_recorded(cold: tuple[Path, dict]) -> None:
    """The build records the rounds the routing phase went on for and the dead fraction
    it measured after each; the last row says whether the criterion held."""
    _, manifest = cold
    until = micro_config(seed=1).collapsed.until
    got = manifest[MOTHER_COLLAPSED]["collapse"]
    assert 0 <= got["rounds"] <= until.max_rounds
    assert got["extra_steps"] == got["rounds"] * until.round_steps
    assert len(got["dead_fraction"]) == got["rounds"] + 1
    last = torch.tensor(got["dead_fraction"][-1])
    assert got["met"] == bool((last >= until.min_dead).double().mean() >= until.layer_share)
    # it stopped as soon as the criterion held, or at the cap
    assert got["met"] or got["rounds"] == until.max_rounds
    for row in got["dead_fraction"][:-1]:
        assert not bool((torch.tensor(row) >= until.min_dead).double().mean() >= until.layer_share)


def test_criterion_counts_layers_with_enough_dead_experts() -> None:
    from darwinmerge.zoo.build import DeadCriterion

    crit = DeadCriterion(threshold=0.05, min_dead=0.5, layer_share=0.5)
    fair = torch.ones(4, 8)
    assert not crit.met(fair)
    half_dead = fair.clone()
    half_dead[:2, :4] = 0.01  # 2 of 4 layers with 4 of 8 experts below 0.05
    assert crit.met(half_dead)
    one_layer = fair.clone()
    one_layer[0, :8] = 0.0
    assert not crit.met(one_layer)  # 1 layer of 4 < layer_share
    edge = fair.clone()
    edge[:2, :4] = 0.05  # at the threshold is not dead (strictly below)
    assert not crit.met(edge)


def test_routed_utilisation_is_a_share_of_the_fair_load() -> None:
    """Sum over experts of u = E: every token fills top_k slots, and the fair share is
    tokens * top_k / E."""
    from darwinmerge.zoo.build import micro_config
    from darwinmerge.zoo.skills import Doc
    from darwinmerge.zoo.train import build_model, routed_utilisation

    cfg = micro_config(seed=0)
    model = build_model(cfg.model, 64, 0, 0)
    docs = [Doc("reasoning", "calc 1+2\n", "1+2=3", "3"), Doc("reasoning", "calc 4+4\n", "", "8")]

    def encode(s: str) -> list[int]:
        return [min(63, b) for b in s.encode()]

    model.train()
    util = routed_utilisation(model, docs, encode, 0)
    assert model.training  # the mode is given back
    E = cfg.model.num_experts
    assert util.shape == (cfg.model.num_layers, E)
    assert torch.all(util >= 0)
    torch.testing.assert_close(
        util.sum(-1), torch.full((cfg.model.num_layers,), float(E), dtype=torch.float64)
    )
