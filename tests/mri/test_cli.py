import json

import numpy as np
import pytest
from typer.testing import CliRunner

from darwinmerge.cli.app import app
from darwinmerge.errors import CheckpointError, ConfigError, OutputExistsError
from darwinmerge.mri import ComparisonScan, Scan, WeightScan
from darwinmerge.zoo.build import build_zoo, micro_config

runner = CliRunner()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    build_zoo(out, micro_config())
    return out


def _run(*args):
    return runner.invoke(app, ["mri", *map(str, args)])


def test_mri_one_model_writes_scan_and_report(zoo, tmp_path):
    out = tmp_path / "scan"
    res = _run(
        zoo / "father",
        "--probes",
        f"zoo@{zoo}",
        "--probes",
        "builtin",
        "--batch-size",
        "8",
        "--bootstrap",
        "50",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    scan = Scan.load(out)
    assert scan.categories[:5] == ["REASONING", "CODE", "LOGIC", "MULTILINGUAL", "KNOWLEDGE"]
    assert scan.family == "qwen3_5_moe" and scan.bootstrap["resamples"] == 50
    assert np.isfinite(scan.bi).all() and (scan.loss > 0).all()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5  # 1 heatmap, lines, util, dead, entropy
    assert "REASONING" in res.output
    again = _run(zoo / "father", "--out", out)
    assert isinstance(again.exception, OutputExistsError)


def test_mri_compare_writes_everything(zoo, tmp_path):
    out = tmp_path / "cmp"
    res = _run(
        "compare",
        zoo / "father",
        zoo / "mother",
        "--base",
        zoo / "base",
        "--probes",
        f"zoo@{zoo}",
        "--bootstrap",
        "20",
        "--max-length",
        "48",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    cmp = ComparisonScan.load(out)
    a, b = Scan.load(out, "scan_a"), Scan.load(out, "scan_b")
    np.testing.assert_array_equal(cmp.advantage, a.bi - b.bi)
    assert np.isfinite(cmp.swap_ab).all() and np.isfinite(cmp.swap_ba).all()
    ws = WeightScan.load(out)
    assert (
        ws.base is not None and np.isfinite(ws.task_cosine[:, ws.components.index("experts")]).all()
    )
    assert json.loads((out / "comparison.json").read_text())["kind"] == "comparison"
    assert "sign agreement" in res.output
    # component swaps, on by default: the mother's fine-tune trains her experts and output
    # head, never her attention, so swapping attention alone moves no loss, and the FFN
    # alone moves it exactly as the whole layer does (the norms are untouched too)
    att, ffn = cmp.part_swaps("attention"), cmp.part_swaps("ffn")
    assert att is not None and ffn is not None
    assert np.abs(att[0]).max() < 1e-5 and np.abs(att[1]).max() < 1e-5
    np.testing.assert_allclose(ffn[0], cmp.swap_ab, rtol=1e-4, atol=1e-6)
    assert "attention swapped alone" in res.output and "ffn swapped alone" in res.output
    flags = ["--probes", f"zoo@{zoo}", "--max-length", "48", "--no-swap-components"]
    bare = _run("compare", zoo / "father", zoo / "mother", *flags, "--out", tmp_path / "bare")
    assert bare.exit_code == 0, bare.output
    assert ComparisonScan.load(tmp_path / "bare").part_swaps("ffn") is None


def test_mri_bad_usage(zoo, tmp_path):
    assert isinstance(
        _run("compare", zoo / "father", "--out", tmp_path / "x").exception, ConfigError
    )
    assert isinstance(
        _run(zoo / "father", "--base", zoo / "base", "--out", tmp_path / "y").exception, ConfigError
    )
    bad = _run(zoo / "father", "--dead-threshold", "2", "--out", tmp_path / "z")
    assert isinstance(bad.exception, ConfigError) and "dead-threshold" in str(bad.exception)
    from darwinmerge.zoo.tiny import build_tiny_model, save_tiny

    bare = save_tiny(build_tiny_model("llama"), tmp_path / "no_tokenizer")
    notok = _run(bare, "--out", tmp_path / "v")
    assert isinstance(notok.exception, ConfigError) and "--tokenizer" in str(notok.exception)
    assert "\n" not in str(notok.exception)
    missing = _run(tmp_path, "--out", tmp_path / "w")
    assert isinstance(missing.exception, CheckpointError) and "config.json" in str(
        missing.exception
    )


def test_mri_loss_flag(zoo, tmp_path):
    out = tmp_path / "all"
    res = _run(
        zoo / "father", "--probes", f"zoo@{zoo}", "--loss", "all", "--bootstrap", "20", "--out", out
    )
    assert res.exit_code == 0, res.output
    every = Scan.load(out)
    assert every.loss_tokens == "all" and "loss (all tokens)" in res.output
    default = _run(
        zoo / "father", "--probes", f"zoo@{zoo}", "--bootstrap", "20", "--out", tmp_path / "c"
    )
    assert default.exit_code == 0, default.output
    done = Scan.load(tmp_path / "c")
    assert done.loss_tokens == "completion"
    assert done.nll_count.sum() < every.nll_count.sum()  # prompt targets left out
    bad = _run(zoo / "father", "--loss", "answer", "--out", tmp_path / "x")
    assert isinstance(bad.exception, ConfigError) and "--loss" in str(bad.exception)
