"""Every bad input: exit 1 with a one-line message naming the problem, nothing left behind."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from darwinmerge.cli import main
from darwinmerge.zoo.tiny import build_tiny_model, make_parent_pair, save_tiny

from .conftest import write_recipe


def _run(args: list[str]) -> int:
    """Run ``darwin ARGS`` through the real entry point (its error boundary included)."""
    argv = sys.argv
    sys.argv = ["darwin", *args]
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = argv
    return 0


@contextmanager
def _edit(model_dir: Path) -> Iterator[dict[str, torch.Tensor]]:
    """Change a saved parent's tensors in place (the dict is written back on exit)."""
    tensors = load_file(model_dir / "model.safetensors")
    yield tensors
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})


def _setup(tmp_path: Path, family: str = "llama", **kw):
    a, b = make_parent_pair(family, tmp_path, **kw)
    cfg = write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
        method="slerp",
        parameters={"t": 0.5},
    )
    return a, b, cfg


def _expect_error(tmp_path, capsys, args, *needles):
    out = tmp_path / "child"
    code = _run(args)
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".child")], (
        "temp folder left behind"
    )
    return lines[0]


def test_shape_mismatch(tmp_path, capsys):
    a = save_tiny(build_tiny_model("llama", seed=0), tmp_path / "a")
    b = save_tiny(build_tiny_model("llama", seed=1, hidden_size=48), tmp_path / "b")
    cfg = write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
        method="slerp",
        parameters={"t": 0.5},
    )
    _expect_error(tmp_path, capsys, ["merge", str(cfg), str(tmp_path / "child")], "hidden")


def test_vocab_mismatch(tmp_path, capsys):
    a = save_tiny(build_tiny_model("llama", seed=0), tmp_path / "a")
    b = save_tiny(build_tiny_model("llama", seed=1, vocab_size=160), tmp_path / "b")
    cfg = write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
        method="slerp",
        parameters={"t": 0.5},
    )
    _expect_error(
        tmp_path, capsys, ["merge", str(cfg), str(tmp_path / "child")], "vocab", "128", "160"
    )


def _shard(model_dir: Path) -> None:
    """Split model.safetensors into two shards with an index."""
    tensors = load_file(model_dir / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    parts = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map = {}
    for fname, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, model_dir / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (model_dir / "model.safetensors").unlink()
    (model_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def test_missing_shard(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    _shard(b)
    (b / "model-00002-of-00002.safetensors").unlink()
    _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child")],
        "model-00002-of-00002.safetensors",
    )


def test_truncated_file(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    f = b / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    _expect_error(
        tmp_path, capsys, ["merge", str(cfg), str(tmp_path / "child")], "model.safetensors"
    )


def test_index_naming_shard_outside_model_dir(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    _shard(b)
    shutil.move(b / "model-00002-of-00002.safetensors", tmp_path / "evil.safetensors")
    idx = json.loads((b / "model.safetensors.index.json").read_text())
    idx["weight_map"] = {
        k: ("../evil.safetensors" if v.endswith("00002.safetensors") else v)
        for k, v in idx["weight_map"].items()
    }
    (b / "model.safetensors.index.json").write_text(json.dumps(idx))
    _expect_error(
        tmp_path, capsys, ["merge", str(cfg), str(tmp_path / "child")], "evil.safetensors"
    )


def test_nan_in_a_parent(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    with _edit(b) as t:
        t["model.layers.1.self_attn.q_proj.weight"][0, 0] = float("nan")
    _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child")],
        "NaN",
        "model.layers.1.self_attn.q_proj.weight",
        "'b'",
    )


def test_unknown_tensor(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    with _edit(a) as t:
        t["model.layers.0.mystery.weight"] = torch.zeros(3)
    _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child")],
        "model.layers.0.mystery.weight",
    )
    # copying it from the donor is allowed when the recipe says so
    assert _run(["merge", str(cfg), str(tmp_path / "child"), "unknown_tensors=donor"]) == 0
    assert "model.layers.0.mystery.weight" in load_file(tmp_path / "child" / "model.safetensors")


def test_unknown_method_lists_known(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    line = _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child"), "method=slurp"],
        "slurp",
        "did you mean 'slerp'",
    )
    for m in ("linear", "ties", "dare_ties", "della", "breadcrumbs", "task_arithmetic"):
        assert m in line


def test_existing_output_needs_force(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    out = tmp_path / "child"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = _run(["merge", str(cfg), str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "--force" in err and "already exists" in err
    assert (out / "keep.txt").read_text() == "precious"
    assert _run(["merge", str(cfg), str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_pickle_checkpoint_refused_unless_allowed(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    t = load_file(b / "model.safetensors")
    torch.save(t, b / "pytorch_model.bin")
    (b / "model.safetensors").unlink()
    _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child")],
        "pytorch_model.bin",
        "--allow-pickle",
    )
    assert _run(["merge", str(cfg), str(tmp_path / "child"), "--allow-pickle"]) == 0


def test_bad_recipe_field(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child"), "donor=nobody"],
        "r.yaml",
        "donor",
        "nobody",
    )


def test_required_parameter_without_value(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child"), "method=linear", "parameters={}"],
        "parameter 'weight'",
        "parent a",
        "no value",
    )


def test_unknown_tensor_in_the_other_parent_is_not_dropped_silently(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    with _edit(b) as t:
        t["model.layers.2.extra_probe.weight"] = torch.ones(3)
    _expect_error(
        tmp_path, capsys, ["merge", str(cfg), str(tmp_path / "child")], "model.layers.2.extra_probe"
    )
    # with unknown_tensors=donor the merge goes on and says what it left out
    assert _run(["merge", str(cfg), str(tmp_path / "child"), "unknown_tensors=donor"]) == 0
    assert "not carried: unknown tensor model.layers.2.extra_probe.weight of b" in (
        capsys.readouterr().err.replace("\n", " ")
    )


def test_validate_refuses_an_out_of_range_parameter_before_any_merge(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    for args, needle in (
        (["parameters.t=1.5"], "parameters.t: 1.5"),
        (["parameters.t=[0.2, 1.5]"], "parameters.t[1]: 1.5"),
        (["parameters.t=[{component: attention, value: -1}, {value: 0.5}]"], "t[0].value: -1"),
    ):
        code = _run(["validate", str(cfg), *args])
        err = capsys.readouterr().err.strip()
        assert code == 1, err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1, err
        assert needle in lines[0] and "must be a number in [0, 1]" in lines[0], lines[0]
    # per-parent values of a per-model parameter are checked too
    code = _run(
        ["validate", str(cfg), "method=linear", "parameters={weight: 1}",
         "parents=[{name: a, path: " + str(a) + ", parameters: {weight: .inf}}, "
         "{name: b, path: " + str(b) + "}]"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "parents[a].parameters.weight: inf is not valid" in err, err
