"""``darwin eval`` through typer's CliRunner on tiny saved models and JSONL tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from darwinmerge.cli.app import app
from darwinmerge.errors import CheckpointError, ConfigError, OutputExistsError

runner = CliRunner()


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tasks") / "tasks.jsonl"
    rows = []
    for i in range(12):
        rows.append(
            {"id": f"add{i}", "category": "REASONING", "prompt": f"{i} + 1 =", "answer": str(i + 1)}
        )
        rows.append(
            {
                "id": f"mc{i}",
                "category": "KNOWLEDGE",
                "prompt": f"Q{i}: sky?",
                "answer": " blue",
                "choices": [" blue", " green"],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_two_models_writes_results(
    saved_models: dict[str, Path], task_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    args = [
        "eval",
        str(saved_models["alpha"]),
        str(saved_models["beta"]),
        "--tasks",
        str(task_file),
        "--split",
        "all",
        "--batch-size",
        "4",
        "--max-new-tokens",
        "4",
        "--limit",
        "5",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "paired: A = alpha" in res.output and "REASONING" in res.output
    data = json.loads(out.read_text())
    assert set(data) == {"meta", "models", "paired", "items"}
    assert set(data["models"]) == {"alpha", "beta"}
    for name in ("alpha", "beta"):
        table = data["models"][name]
        assert set(table) == {"KNOWLEDGE", "REASONING", "overall"}
        assert table["REASONING"]["n"] == 5 and table["KNOWLEDGE"]["n"] == 5  # --limit per category
        items = data["items"][name]
        assert len(items) == 10
        k = sum(it["correct"] for it in items if it["category"] == "KNOWLEDGE")
        assert table["KNOWLEDGE"]["score"] == pytest.approx(k / 5)
        mean = (table["KNOWLEDGE"]["score"] + table["REASONING"]["score"]) / 2
        assert table["overall"]["score"] == pytest.approx(mean)
        assert table["overall"]["ci_low"] <= mean <= table["overall"]["ci_high"]
        # MC items were scored by log-likelihood (auto scorer): predictions are choices
        assert all(
            it["prediction"] in (" blue", " green") for it in items if it["category"] == "KNOWLEDGE"
        )
    (paired,) = data["paired"]
    assert (paired["a"], paired["b"]) == ("alpha", "beta")
    a_items = {it["id"]: it["correct"] for it in data["items"]["alpha"]}
    b_items = {it["id"]: it["correct"] for it in data["items"]["beta"]}
    a_only = sum(a_items[i] and not b_items[i] for i in a_items)
    assert paired["rows"]["overall"]["a_only"] == a_only
    # existing output is refused without --force, accepted with it
    with pytest.raises(OutputExistsError, match="--force"):
        runner.invoke(app, args, catch_exceptions=False)
    res = runner.invoke(app, [*args, "--force"], catch_exceptions=False)
    assert res.exit_code == 0
    assert not list(tmp_path.glob(".results.json.tmp-*"))


def test_eval_split_and_errors(
    saved_models: dict[str, Path], task_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    base = ["eval", str(saved_models["alpha"]), "--tasks", str(task_file), "--max-new-tokens", "2"]
    res = runner.invoke(app, [*base, "--split", "test", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    test_ids = {it["id"] for it in json.loads(out.read_text())["items"]["alpha"]}
    res = runner.invoke(
        app, [*base, "--split", "fitness", "--out", str(out), "--force"], catch_exceptions=False
    )
    fit_ids = {it["id"] for it in json.loads(out.read_text())["items"]["alpha"]}
    assert test_ids and fit_ids and test_ids.isdisjoint(fit_ids) and len(test_ids | fit_ids) == 24
    with pytest.raises(ConfigError, match="--answer-regex"):
        runner.invoke(app, [*base, "--answer-regex", "(.*)"], catch_exceptions=False)
    with pytest.raises(ConfigError, match="--dtype"):
        runner.invoke(app, [*base, "--dtype", "int8"], catch_exceptions=False)
    with pytest.raises(ConfigError, match="--split 'train'"):
        runner.invoke(app, [*base, "--split", "train"], catch_exceptions=False)
    with pytest.raises(CheckpointError, match="no config.json"):  # checked before any work
        runner.invoke(app, [*base, str(tmp_path)], catch_exceptions=False)
