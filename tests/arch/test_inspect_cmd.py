"""``darwin inspect`` on tiny checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from darwinmerge.cli.app import app, main
from darwinmerge.cli.inspect_cmd import _layer_pattern
from darwinmerge.errors import CheckpointError
from darwinmerge.zoo.tiny import build_tiny_model, make_parent_pair, save_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def father(tmp_path_factory: pytest.TempPathFactory) -> Path:
    a, _ = make_parent_pair(
        "qwen3_5_moe",
        tmp_path_factory.mktemp("pair"),
        layout_a="fused",
        multimodal_a=True,
        mtp_a=True,
    )
    return a


def test_inspect_tables(father: Path) -> None:
    result = runner.invoke(app, ["inspect", str(father)])
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "qwen3_5_moe",
        "3x linear_attention, 1x full_attention",
        "4, top-k 2, layout fused",
        "model.language_model.",
        "True / True",
        "linear_attn",
        "shared_expert_gate",
        "vision",
        "mtp",
    ):
        assert text in out, text
    assert "mlp.experts.gate_up_proj" not in out  # tensors only with --tensors


def test_inspect_tensors_lists_every_tensor(father: Path) -> None:
    result = runner.invoke(app, ["inspect", str(father), "--tensors"])
    assert result.exit_code == 0, result.output
    assert "model.language_model.layers.0.mlp.experts.gate_up_proj" in result.output
    assert "model.layers.0.mlp.experts.gate_up_proj" in result.output  # its canonical name
    assert "mtp.fc.weight" in result.output


def test_inspect_json_numbers_match_the_model(tmp_path: Path) -> None:
    model = build_tiny_model("qwen2_moe", seed=3, num_layers=3)
    path = save_tiny(model, tmp_path / "m")
    result = runner.invoke(app, ["inspect", str(path), "--json", "--tensors"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    n_params = sum(p.numel() for p in model.parameters())
    assert info["total_params"] == n_params
    assert info["total_bytes"] == 4 * n_params  # float32
    # in memory 2 fused expert tensors per layer; on disk (per_expert) 3 per expert
    assert (
        info["total_tensors"] == len(model.state_dict()) - 2 * 3 + 3 * 4 * 3 == len(info["tensors"])
    )
    comps = {c["component"]: c for c in info["components"]}
    assert comps["experts"]["tensors"] == 3 * 4 * 3
    assert comps["experts"]["params"] == 3 * 4 * 3 * 16 * 32
    assert comps["shared_expert_gate"]["params"] == 3 * 32
    assert [r["mlp"] for r in info["layers"]] == ["moe"] * 3
    assert (
        sum(r["params"] for r in info["layers"])
        + sum(comps[c]["params"] for c in ("embed", "lm_head", "final_norm"))
        == n_params
    )
    assert info["expert_layout"] == "per_expert" and info["num_experts"] == 4


def test_inspect_bad_path_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    result = runner.invoke(app, ["inspect", str(missing)])
    assert result.exit_code != 0 and isinstance(result.exception, CheckpointError)
    monkeypatch.setattr(sys, "argv", ["darwin", "inspect", str(missing)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(missing) in err and "\n" not in err


def test_layer_pattern() -> None:
    assert (
        _layer_pattern(["linear_attention"] * 3 + ["full_attention"])
        == "3x linear_attention, 1x full_attention"
    )
    assert _layer_pattern((["l"] * 3 + ["f"]) * 10) == "3x l, 1x f (repeated 10x)"
    assert _layer_pattern(["f"] * 4) == "4x f"
    assert _layer_pattern(["a", "b", "b"]) == "1x a, 2x b"


def test_inspect_counts_unknown_tensors_as_other(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = save_tiny(build_tiny_model("llama", num_layers=2), tmp_path / "m")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["model.extra_adapter.weight"] = torch.zeros(3, 5)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["unknown"] == ["model.extra_adapter.weight"]
    other = [c for c in info["components"] if c["component"] == "other"]
    assert other == [{"component": "other", "tensors": 1, "params": 15, "bytes": 60}]
    table = runner.invoke(app, ["inspect", str(path)])
    assert "model.extra_adapter.weight" in table.output
