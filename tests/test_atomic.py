"""Files and folders are replaced whole: a failed write leaves the old file or folder and
no temporary; an existing folder is replaced only with force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from darwinmerge.atomic import atomic_folder, write_json_atomic, write_text_atomic
from darwinmerge.errors import OutputExistsError


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


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_folder_appears_whole_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "mri"  # missing parents are made
    with atomic_folder(target) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir())
        assert tmp.parent == target.parent and tmp.name.startswith(".mri.tmp-")
        (tmp / "scan.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("a")
        assert not target.exists()  # nothing at the path while it is written
    assert _tree(target) == {"scan.json": "{}", "sub/a.txt": "a"}
    assert [p.name for p in target.parent.iterdir()] == ["mri"]


def test_an_existing_folder_is_refused_without_force_and_replaced_with_it(
    tmp_path: Path,
) -> None:
    target = tmp_path / "child"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_folder(target):
            raise AssertionError("refused before the body runs")
    assert _tree(target) == {"old.txt": "old"}
    with atomic_folder(target, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert _tree(target) == {"old.txt": "old"}  # the old one stays until the end
    assert _tree(target) == {"new.txt": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["child"]
    # a file in the folder's place is replaced too, with force
    (tmp_path / "child").rename(tmp_path / "gone")
    (tmp_path / "child").write_text("a file")
    with atomic_folder(tmp_path / "child", force=True) as tmp:
        (tmp / "x").write_text("x")
    assert _tree(tmp_path / "child") == {"x": "x"}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_folder_write_keeps_the_old_folder(tmp_path: Path, error: type) -> None:
    target = tmp_path / "health"
    target.mkdir()
    (target / "verdict.json").write_text("old")
    with pytest.raises(error):
        with atomic_folder(target, force=True) as tmp:
            (tmp / "verdict.json").write_text("half")
            raise error
    assert _tree(target) == {"verdict.json": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["health"]


def test_a_failed_rename_puts_the_old_folder_back(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    target = tmp_path / "final"
    target.mkdir()
    (target / "results.json").write_text("old")
    real = os.replace

    def second_rename_fails(src, dst):  # type: ignore[no-untyped-def]
        if Path(src).name.startswith(".final.tmp-"):
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr("darwinmerge.atomic.os.replace", second_rename_fails)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_folder(target, force=True) as tmp:
            (tmp / "results.json").write_text("new")
    assert _tree(target) == {"results.json": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_a_killed_writers_temporary_is_cleared_a_live_ones_kept(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".mri.tmp-{dead_pid}"
    stale.mkdir()
    (stale / "half.json").write_text("{")
    aside = tmp_path / f".mri.old-{dead_pid}"
    aside.mkdir()
    live = tmp_path / f".mri.tmp-{os.getppid()}"  # our parent: alive
    live.mkdir()
    with atomic_folder(tmp_path / "mri") as tmp:
        (tmp / "a").write_text("a")
    assert not stale.exists() and not aside.exists()
    assert live.is_dir()
    assert _tree(tmp_path / "mri") == {"a": "a"}
