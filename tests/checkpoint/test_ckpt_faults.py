"""Faults that must lose nothing: a full or read-only output disk, a killed merge, Inf in
a parent, a lying safetensors header, parents of different depth or expert count."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from darwinmerge.checkpoint import CheckpointReader, CheckpointWriter
from darwinmerge.errors import CheckpointError
from darwinmerge.zoo.tiny import build_tiny_model, make_parent_pair, save_tiny
from tests.merge.conftest import write_recipe
from tests.merge.test_bad_input import _edit, _expect_error, _setup

DARWIN = str(Path(sys.executable).with_name("darwin"))


def _in_tmpfs(tmp_path: Path, script: str, *, size: str, read_only: bool = False) -> str:
    """Run ``sh -c script`` with a fresh tmpfs of ``size`` mounted at ``$0`` (a private
    mount namespace: the mount vanishes with the process); returns stdout + stderr."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = f"size={size}" + (",ro" if read_only else "")
    root = [] if os.geteuid() == 0 else ["--map-root-user"]
    cmd = [
        "unshare",
        "--mount",
        *root,
        "sh",
        "-c",
        f'mount -t tmpfs -o {opts} tmpfs "$0" && ' + script,
        str(mnt),
    ]
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs privately")
    probe = subprocess.run(["unshare", "--mount", *root, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs a private mount namespace (unshare) to mount a small tmpfs")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr


def _pair_recipe(tmp_path: Path) -> Path:
    a, b = make_parent_pair("qwen3_moe", tmp_path, num_layers=2)
    return write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
        method="slerp",
        parameters={"t": 0.5},
    )


def test_output_disk_too_small_says_how_much_is_needed(tmp_path):
    cfg = _pair_recipe(tmp_path)
    out = _in_tmpfs(
        tmp_path,
        f'{DARWIN} merge {cfg} "$0/child"; echo "rc=$?"; echo "left:$(ls -A "$0")"',
        size="64k",
    )
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    assert "needs" in errors[0] and "free" in errors[0] and "MB" in errors[0], errors[0]
    assert "rc=1" in out and "left:\n" in out + "\n", out  # no child, no temporary folder


def test_disk_filling_up_mid_write_keeps_nothing(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys, torch
        from pathlib import Path
        from darwinmerge.checkpoint import CheckpointWriter
        from darwinmerge.errors import DiskFullError
        mnt = Path(sys.argv[1])
        t = torch.ones(256, 1024)  # 1 MiB each
        try:
            with CheckpointWriter(mnt / "child", max_shard_bytes=2**21) as w:
                w.plan([(f"t{i}", t.dtype, t.shape) for i in range(3)])
                # someone else fills the disk after the free-space check
                free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
                with open(mnt / "filler", "wb") as fh:
                    fh.write(b"x" * (free - 2**20))
                for i in range(3):
                    w.add(f"t{i}", t)
        except DiskFullError as exc:
            print("ERROR", exc)
        print("LEFT", sorted(os.listdir(mnt)))
        """
    )
    (tmp_path / "fill.py").write_text(script)
    out = _in_tmpfs(tmp_path, f'{sys.executable} {tmp_path / "fill.py"} "$0"', size="4m")
    assert "ERROR" in out and "filled up while writing" in out and "needs 3." in out, out
    assert "LEFT ['filler']" in out, out


def test_read_only_output_folder(tmp_path):
    cfg = _pair_recipe(tmp_path)
    out = _in_tmpfs(
        tmp_path, f'{DARWIN} merge {cfg} "$0/child"; echo "rc=$?"', size="1m", read_only=True
    )
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "rc=1" in out, out
    assert "cannot write the output there" in errors[0] and "Read-only" in errors[0], errors[0]


def test_sigkill_during_a_merge_then_the_next_run_clears_the_stale_folder(tmp_path):
    a = save_tiny(build_tiny_model("llama", seed=0, hidden_size=512, num_layers=8), tmp_path / "a")
    b = save_tiny(build_tiny_model("llama", seed=1, hidden_size=512, num_layers=8), tmp_path / "b")
    cfg = write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
        method="slerp",
        parameters={"t": 0.5},
    )
    child = tmp_path / "child"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _attempt in range(3):
        proc = subprocess.Popen(
            [DARWIN, "merge", str(cfg), str(child)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        stale: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            stale = [p for p in tmp_path.glob(".child.tmp-*") if list(p.glob(".shard-*"))]
            if stale:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait()
        if stale and proc.returncode == -signal.SIGKILL:
            break
        shutil.rmtree(child, ignore_errors=True)  # finished before the kill: try again
    assert stale, "could not catch the merge while it was writing"
    assert not child.exists()  # nothing visible under the output name
    assert all(p.exists() for p in stale)
    again = subprocess.run(
        [DARWIN, "merge", str(cfg), str(child)], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    said = " ".join(again.stderr.split())
    assert "interrupted run" in said and stale[0].name in "".join(said.split()), said
    assert not list(tmp_path.glob(".child.tmp-*"))
    assert (child / "model.safetensors").exists()


def test_a_live_writers_folder_is_left_alone(tmp_path):
    with CheckpointWriter(tmp_path / "child") as first:
        first.add("x", torch.ones(2))
        with CheckpointWriter(tmp_path / "child", force=True) as second:
            assert second.notes == [] and first.tmp_dir.exists()
            second.add("x", torch.zeros(2))
        first.force = True


def test_inf_in_a_parent_is_named_like_nan(tmp_path, capsys):
    a, b, cfg = _setup(tmp_path)
    with _edit(a) as t:
        t["model.layers.0.mlp.down_proj.weight"][1, 2] = float("-inf")
    _expect_error(
        tmp_path,
        capsys,
        ["merge", str(cfg), str(tmp_path / "child")],
        "inf",
        "model.layers.0.mlp.down_proj.weight",
        "'a'",
    )


def test_header_claiming_a_huge_length_is_refused_before_allocating(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes((2**62).to_bytes(8, "little") + b'{"__metadata__":{}}')
    with pytest.raises(CheckpointError, match=r"header length 4611686018427387904 runs past"):
        CheckpointReader(f)
    # a length inside the file but above the format's bound is refused too, unread
    f.write_bytes((150_000_000).to_bytes(8, "little") + b" " * 1000)
    os.truncate(f, 150_000_100)
    with pytest.raises(CheckpointError, match="exceeds 100000000 bytes"):
        CheckpointReader(f)


@pytest.mark.parametrize(
    ("kw_b", "needles"),
    [
        ({"num_layers": 3}, ("layer counts differ", "2 vs 3")),
        ({"num_experts": 8}, ("expert counts differ", "4 vs 8")),
    ],
)
def test_different_depth_or_expert_count_before_any_tensor_is_read(
    tmp_path, capsys, monkeypatch, kw_b, needles
):
    a = save_tiny(build_tiny_model("qwen3_moe", seed=0, num_layers=2), tmp_path / "a")
    kw = {"num_layers": 2, **kw_b}
    b = save_tiny(build_tiny_model("qwen3_moe", seed=1, **kw), tmp_path / "b")
    cfg = write_recipe(
        tmp_path / "r.yaml",
        parents=[{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}],
        method="linear",
        parameters={"weight": 0.5},
    )

    def no_reads(*args, **kwargs):
        raise AssertionError("a tensor was read before the architecture check")

    monkeypatch.setattr(CheckpointReader, "_pread", no_reads)
    monkeypatch.setattr(CheckpointReader, "_read", no_reads)
    _expect_error(tmp_path, capsys, ["merge", str(cfg), str(tmp_path / "child")], *needles)
