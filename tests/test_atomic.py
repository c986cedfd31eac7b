"""Small files are replaced whole: a failed write leaves the old file and no temporary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from darwinmerge.atomic import write_json_atomic, write_text_atomic


def test_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "winner_recipe.yaml"
    target.write_text("old\n")
    write_text_atomic(target, "new: 1\n")
    assert target.read_text() == "new: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["winner_recipe.yaml"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_json_atomic(target, {"phase": "mri"})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"score": float("nan")})  # NaN is refused before writing
    with pytest.raises(TypeError):
        write_json_atomic(target, {"x": object()})
    assert json.loads(target.read_text()) == {"phase": "mri"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_an_interrupted_write_removes_its_temporary(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "config.yaml"
    target.write_text("a: 1\n")

    def boom(src, dst):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr("darwinmerge.atomic.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
