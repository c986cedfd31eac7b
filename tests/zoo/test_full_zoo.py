"""The full-size zoo is winnable (slow: ~5 min build + ~1 min evaluation on one thread).

Run with ``pytest -m slow tests/zoo/test_full_zoo.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from darwinmerge.zoo.build import build_zoo

pytestmark = pytest.mark.slow


def test_merge_beats_both_parents_on_test_split(tmp_path: Path, trained_zoo: Path) -> None:
    import darwinmerge.zoo.tasks  # noqa: F401  (registers the "zoo" task source)
    from darwinmerge.evaluate import TransformersBackend, evaluate, load_tasks
    from darwinmerge.merge import merge_to_disk
    from darwinmerge.zoo.recipes import WINNING, to_recipe

    zoo = trained_zoo
    manifest = build_zoo(zoo)  # the cached zoo: returns its manifest
    assert 1_000_000 <= manifest["n_params"] <= 5_000_000
    # (build time is a machine's figure, not a property: docs/zoo.md names the runs)
    merge_to_disk(to_recipe(WINNING, zoo / "father", zoo / "mother"), tmp_path / "child")
    items = load_tasks(f"zoo:{zoo}", split="test")
    res = {
        name: evaluate(TransformersBackend(path, batch_size=64, max_new_tokens=24), items).table()
        for name, path in (
            ("father", zoo / "father"),
            ("mother", zoo / "mother"),
            ("child", tmp_path / "child"),
        )
    }
    f, m, c = res["father"], res["mother"], res["child"]
    assert m["reasoning"].score > f["reasoning"].score + 0.15
    for cat in ("code", "logic", "multilingual", "knowledge"):
        assert f[cat].score > m[cat].score, cat
    assert c["overall"].score > f["overall"].score + 0.02
    assert c["overall"].score > m["overall"].score + 0.1
