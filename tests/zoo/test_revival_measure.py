"""benchmarks/revival.py on the micro zoo: the revived slots are exactly the ones changed,
the variants edit only those router rows, and the tables recompute from the items."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from darwinmerge.zoo.build import MOTHER_COLLAPSED, build_zoo, micro_config

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD = 0.9  # micro routers are barely trained: "dead" = below 0.9 x fair share


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("revival_bench", ROOT / "benchmarks/revival.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["revival_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


rb = _load_bench()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("revzoo") / "z"
    build_zoo(out, micro_config(seed=0))
    return out


@pytest.fixture(scope="module")
def bench(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.set_num_threads(1)
    b = rb.Bench(
        zoo,
        MOTHER_COLLAPSED,
        work=tmp_path_factory.mktemp("work"),
        bootstrap=20,
        threshold=THRESHOLD,
        log=lambda m: None,
    )
    b.scans = b.parent_scans()
    return b


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _revived_candidate(bench: Any, edit: Any = None) -> Any:
    recipe = rb.pair_recipe(
        bench.father_dir,
        bench.mother_dir,
        MOTHER_COLLAPSED,
        t_router=1.0,
        t_moe=1.0,
        t_rest=1.0,
        revive=bench.revive_field(),
    )
    return rb.Candidate(f"mother+revive {edit}", recipe, edit)


def test_revival_changes_exactly_the_revived_slots(bench: Any) -> None:
    _, scan_m = bench.scans
    cand = _revived_candidate(bench)
    child = _state(bench.realise(cand))
    mother, father = _state(bench.mother), bench.father_state
    assert cand.revived, "the micro mother should have experts below 0.9 x fair share"
    # every revived slot is below the threshold in the mother's scan
    for layer, ids in cand.revived.items():
        s = scan_m.sparse_layers.index(layer)
        assert all(scan_m.utilisation[s, e] < THRESHOLD for e in ids)
    for name, m in mother.items():
        c = child[name]
        layer = int(name.split(".layers.")[1].split(".")[0]) if ".layers." in name else None
        ids = cand.revived.get(layer, []) if layer is not None else []
        if name.endswith("mlp.gate.weight") or ".mlp.experts." in name:
            keep = [e for e in range(m.shape[0]) if e not in ids]
            assert torch.equal(c[keep], m[keep]), name  # other slots: the mother's, bit for bit
            assert torch.equal(c[ids], father[name][ids]), name  # revived: the father's
        else:
            assert torch.equal(c, m), name
    # at least one revived router row really differs from the mother's
    assert any(
        not torch.equal(
            mother[rb.ROUTER_KEY.format(layer=la)][ids], child[rb.ROUTER_KEY.format(layer=la)][ids]
        )
        for la, ids in cand.revived.items()
    )


@pytest.mark.parametrize("which", ["scale", "norm", "offset"])
def test_variants_edit_only_the_revived_router_rows(bench: Any, which: str) -> None:
    plain = _revived_candidate(bench)
    base = _state(bench.realise(plain))
    edit = {"scale": rb.edit_scale(3.0), "norm": rb.edit_norm_match, "offset": rb.edit_offset}
    cand = _revived_candidate(bench, edit[which])
    child = _state(bench.realise(cand))
    assert cand.revived == plain.revived
    father = bench.father_state
    for name, b in base.items():
        if not name.endswith("mlp.gate.weight"):
            assert torch.equal(child[name], b), name
            continue
        layer = int(name.split(".layers.")[1].split(".")[0])
        ids = cand.revived.get(layer, [])
        live = [e for e in range(b.shape[0]) if e not in ids]
        assert torch.equal(child[name][live], b[live]), name
        for e in ids:
            got, row = child[name][e], b[e]
            if which == "scale":
                torch.testing.assert_close(got, 3.0 * row, rtol=1e-6, atol=0.0)
            elif which == "norm":
                want = b[live].norm(dim=1).mean()
                assert float(got.norm()) == pytest.approx(float(want), rel=1e-5)
                cos = torch.nn.functional.cosine_similarity(got, row, dim=0)
                assert float(cos) == pytest.approx(1.0, rel=1e-5)
            else:
                shift = (b[live] - father[name][live]).mean(0)
                torch.testing.assert_close(got, row + shift, rtol=1e-5, atol=1e-6)
    # the engine's memory was dropped: re-realising the plain candidate restores it
    again = _state(bench.realise(_revived_candidate(bench)))
    assert all(torch.equal(again[k], v) for k, v in base.items())


def test_slot_utilisation_recomputes_from_counts(bench: Any) -> None:
    scan_f, scan_m = bench.scans
    slots = {scan_m.sparse_layers[0]: [0, 1]}
    u = rb.slot_utilisation(scan_m, slots)
    assert u["n"] == 2
    for p in u["slots"]:
        s = scan_m.sparse_layers.index(p["layer"])
        fair = scan_m.tokens.sum() * scan_m.top_k / scan_m.num_experts
        want = scan_m.expert_counts[s, :, p["expert"]].sum() / fair
        assert p["utilisation"] == pytest.approx(float(want), rel=1e-9)
        # per-category utilisations average back to the total, weighted by fair shares
        w = np.array(
            [scan_m.tokens[scan_m.seq_category == c].sum() for c in range(len(scan_m.categories))]
        )
        per = np.array([p["by_category"][c] for c in scan_m.categories])
        assert float((per * w).sum() / w.sum()) == pytest.approx(p["utilisation"], rel=1e-9)
    assert u["mean"] == pytest.approx(np.mean([p["utilisation"] for p in u["slots"]]), rel=1e-12)
    table = rb.dead_table(scan_f, scan_m)
    for row in table:
        s = scan_m.sparse_layers.index(row["layer"])
        dead = [e for e in range(scan_m.num_experts) if scan_m.utilisation[s, e] < THRESHOLD]
        assert row["mother"]["dead"] == dead
        assert row["mother"]["dead_fraction"] == pytest.approx(len(dead) / scan_m.num_experts)
        lo, hi = row["mother"]["interval"]
        assert lo <= hi


def test_measure_tables_recompute_from_items(zoo: Path, tmp_path: Path) -> None:
    out = rb.measure(
        zoo,
        work=tmp_path,
        grid=((0.5, 0.5, 0.0), (1.0, 1.0, 0.0)),
        scales=(2.0,),
        thresholds=(),
        threshold=THRESHOLD,
        fit_limit=2,
        test_limit=2,
        bootstrap=20,
        log=lambda m: None,
    )
    fit = out["fitness"]
    grid_names = ["merge r0.5 moe0.5 rest0", "merge r1 moe1 rest0"]
    best = max(grid_names, key=lambda n: fit["scores"][n]["overall"])
    assert fit["best_merge"] == best  # chosen on the fitness split
    test = out["test"]
    assert test["item3"] == ["mother", "mother+revive", best, f"{best} +revive"]
    for payload in test["models"].values():
        again = rb.table_from_items(payload["items"])
        assert again.keys() == payload["table"].keys()
        for cat, row in again.items():
            for key in ("score", "ci_low", "ci_high"):
                assert row[key] == pytest.approx(payload["table"][cat][key], rel=1e-9, abs=1e-12)
            assert row["n"] == payload["table"][cat]["n"]
    # paired counts recompute from the per-item correctness
    comp = test["compare"]["mother+revive vs mother"]["rows"]
    a = test["models"]["mother+revive"]["items"]
    b = test["models"]["mother"]["items"]
    for cat, row in comp.items():
        ids = [i for i in a if cat in ("overall", a[i][0])]
        assert row["a_only"] == sum(a[i][1] and not b[i][1] for i in ids)
        assert row["b_only"] == sum(b[i][1] and not a[i][1] for i in ids)
        assert row["n"] == len(ids)
    assert out["revived"]["mother+revive"]["child"]["n"] == sum(
        len(v) for v in out["revived"]["mother+revive"]["slots"].values()
    )
