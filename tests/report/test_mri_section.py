import numpy as np
import pytest

from darwinmerge.mri import weight_scan
from darwinmerge.report import SECTIONS, BarsInfo, HeatmapInfo, LinesInfo, TableInfo, mri_section
from darwinmerge.zoo.tiny import make_parent_pair


def test_section_info_holds_the_scan_numbers(parent_scans):
    sa, sb, cmp = parent_scans
    sec = mri_section({"father": sa, "mother": sb}, cmp)
    assert SECTIONS.get("mri") is mri_section
    assert sec.phase == "mri"
    heat = sec.find("Probe x layer importance (BI) - mother")
    assert isinstance(heat, HeatmapInfo)
    np.testing.assert_array_equal(heat.values, sb.bi)
    assert heat.row_labels == tuple(sb.categories)
    lines = sec.find("Importance per layer")
    assert isinstance(lines, LinesInfo)
    np.testing.assert_array_equal(lines.series["father"], sa.bi_all)
    util = sec.find("Expert utilisation - father")
    assert isinstance(util, HeatmapInfo) and util.center == 1.0
    np.testing.assert_array_equal(util.values, sa.utilisation)
    dead = sec.find("Dead experts per layer")
    assert isinstance(dead, BarsInfo)
    np.testing.assert_array_equal(dead.high["mother"], sb.dead_interval[:, 1])
    adv = next(b for b in sec.blocks if getattr(b, "title", "").startswith("Advantage map"))
    np.testing.assert_array_equal(adv.values, sa.bi - sb.bi)
    swap = sec.find("Swap-scan advantage of A over B")
    np.testing.assert_array_equal(swap.values, cmp.swap_advantage)
    table = sec.find("Summary")
    assert isinstance(table, TableInfo)
    assert table.rows[0][0] == "father" and table.rows[0][4] == f"{np.mean(sa.loss):.3f}"


def test_dense_scan_has_no_moe_blocks(parent_scans):
    from darwinmerge.mri import builtin_probes, run_scan, tokenize_probes
    from darwinmerge.zoo.tiny import build_tiny_model

    pb = tokenize_probes(builtin_probes().take(1), lambda s: [b % 128 for b in s.encode()])
    dense = run_scan(build_tiny_model("llama"), pb)
    sec = mri_section({"llama": dense})
    with pytest.raises(KeyError):
        sec.find("Dead experts per layer")
    assert sec.find("Summary").rows[0][3] == "dense"


def test_weight_blocks(tmp_path):
    a, b = make_parent_pair("mixtral", tmp_path, seed_a=0, seed_b=1)
    base, _ = make_parent_pair("mixtral", tmp_path / "base", seed_a=2, seed_b=3)
    ws = weight_scan(a, b, base)
    from darwinmerge.mri import builtin_probes, run_scan, tokenize_probes
    from darwinmerge.zoo.tiny import build_tiny_model

    pb = tokenize_probes(builtin_probes().take(1), lambda s: [b % 128 for b in s.encode()])
    sec = mri_section({"a": run_scan(build_tiny_model("mixtral"), pb)}, weights=ws)
    rel = sec.find("Relative weight delta |B-A| / |A|")
    np.testing.assert_array_equal(rel.values, ws.rel_delta.T)
    assert rel.row_labels == tuple(ws.components)
    np.testing.assert_array_equal(
        sec.find("Sign conflicts of the task vectors").values, ws.sign_conflict.T
    )


def test_component_swaps_get_their_own_maps(parent_scans):
    import dataclasses

    sa, sb, cmp = parent_scans
    plain = mri_section({"father": sa, "mother": sb}, cmp).blocks
    assert not any("alone" in getattr(b, "title", "") for b in plain)
    ab = np.arange(cmp.swap_ab.size, dtype=float).reshape(cmp.swap_ab.shape) / 100
    ba = -2 * ab
    with_parts = dataclasses.replace(
        cmp, swap_ab_attention=ab, swap_ba_attention=ba, swap_ab_ffn=ba, swap_ba_ffn=ab
    )
    sec = mri_section({"father": sa, "mother": sb}, with_parts)
    att = sec.find("Swap-scan advantage of A over B, attention alone")
    np.testing.assert_allclose(att.values, 1.5 * ab)  # (ab - ba) / 2
    ffn = sec.find("Swap-scan advantage of A over B, FFN (router + experts) alone")
    np.testing.assert_allclose(ffn.values, -1.5 * ab)
    whole = sec.find("Swap-scan advantage of A over B")
    np.testing.assert_array_equal(whole.values, cmp.swap_advantage)
