"""``darwin zoo build``: refuses a folder that is not this zoo (no training needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_refuses_foreign_folder_without_force(tmp_path: Path) -> None:
    out = tmp_path / "zoo"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from darwinmerge.cli.app import main; main()",
            "zoo",
            "build",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "--force" in proc.stderr and str(out) in proc.stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_help_lists_options() -> None:
    from typer.testing import CliRunner

    from darwinmerge.cli.app import app

    result = CliRunner().invoke(app, ["zoo", "build", "--help"])
    assert result.exit_code == 0
    assert "--seed" in result.output and "--force" in result.output
