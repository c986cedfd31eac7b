"""The one ``darwin`` command: every subcommand registered, errors are one line."""

import subprocess
import sys
from pathlib import Path

DARWIN = [sys.executable, "-m", "darwinmerge.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DARWIN, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    out = _run("--help")
    assert out.returncode == 0
    for cmd in ("merge", "validate", "inspect", "eval", "demo"):
        assert cmd in out.stdout, cmd


def test_usage_and_library_errors_are_one_line(tmp_path: Path):
    usage = _run("merge", "--threads", "many", "a.yaml", "out")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "--threads" in usage.stderr
    missing = _run("merge", str(tmp_path / "nope.yaml"), str(tmp_path / "out"))
    assert missing.returncode == 1
    lines = [ln for ln in missing.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and "nope.yaml" in lines[-1] and "not found" in lines[-1]
    assert "Traceback" not in missing.stderr
    debug = _run("--debug", "merge", str(tmp_path / "nope.yaml"), str(tmp_path / "out"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr
