"""The full-size collapsed mother (slow: ~1.5 min to add her to the shared zoo when she is
missing, ~1 min of scans and evaluation on one thread).

Run with ``pytest -m slow tests/zoo/test_collapsed_full.py``. The numbers are in
docs/zoo.md ("The collapsed mother").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from darwinmerge.zoo.build import MOTHER_COLLAPSED, build_zoo, read_manifest

pytestmark = pytest.mark.slow


def _dead_on(scan: Any, category: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Dead fraction and bootstrap interval per MoE layer on the probes of ``category``
    (all probes when None), by the MRI's own rule (utilisation < 0.05 of a fair share)."""
    from darwinmerge.mri import metrics as M

    sel = np.ones(len(scan.tokens), bool)
    if category is not None:
        sel = scan.seq_category == scan.categories.index(category)
    counts, tokens = scan.expert_counts[:, sel], scan.tokens[sel]
    util = M.utilisation(counts, tokens, scan.top_k)
    low_high = M.bootstrap_dead_fraction(counts, tokens, scan.top_k, scan.dead_threshold)
    return M.dead_fraction(util, scan.dead_threshold), low_high


@pytest.fixture(scope="module")
def scans(trained_zoo: Path) -> dict:
    from darwinmerge.mri.pipeline import MriConfig, scan_model

    manifest = build_zoo(trained_zoo)  # adds her to a zoo built before she existed
    assert (trained_zoo / MOTHER_COLLAPSED / "config.json").exists()
    assert manifest[MOTHER_COLLAPSED]["father_sha256"] == manifest["weights_sha256"]["father"]
    cfg = MriConfig(probes=(f"zoo@{trained_zoo}",))
    return {name: scan_model(trained_zoo / name, cfg) for name in ("father", MOTHER_COLLAPSED)}


def test_her_dead_experts_are_separated_from_the_fathers(trained_zoo: Path, scans: dict) -> None:
    """What holds on any machine's build: the build trains her routing until the dead-expert
    criterion holds on her own REASONING documents (``DeadCriterion``, recorded in
    zoo.json), and the MRI, on other documents (the zoo probes), sees the same collapse.
    The father's own dead experts are whatever his pre-training left; only the gap is
    asserted."""
    father, her = scans["father"], scans[MOTHER_COLLAPSED]
    assert father.num_experts == her.num_experts == 8 and her.top_k == 2
    collapse = read_manifest(trained_zoo)[MOTHER_COLLAPSED]["collapse"]
    assert collapse["met"], f"her routing did not collapse: {collapse}"
    # the collapse is real: her per-token router entropy is well below his. (Her dead
    # fraction over all the probes, a mix of five skills, is a build's fact, not the
    # criterion's: above the father's on the lead's build, 0 in every layer on session
    # 8's, where every expert still gets >= 0.05 of a fair share of the mixed tokens.)
    assert np.mean(her.router_entropy) < np.mean(father.router_entropy) - 0.1
    # the fine-tune's own domain (REASONING probes): >= 40 % dead in at least half the
    # layers, with her bootstrap interval above the father's in those layers
    dead_r, iv_r = _dead_on(her, "REASONING")
    dead_f, iv_f = _dead_on(father, "REASONING")
    bar = (dead_r >= 0.4) & (iv_r[:, 0] > iv_f[:, 1])
    assert bar.sum() >= len(dead_r) / 2, (dead_r, dead_f)


def test_she_beats_the_father_on_reasoning_test_split(trained_zoo: Path, scans: dict) -> None:
    import darwinmerge.zoo.tasks  # noqa: F401  (registers the "zoo" task source)
    from darwinmerge.evaluate import TransformersBackend, evaluate, load_tasks

    items = [
        it for it in load_tasks(f"zoo:{trained_zoo}", split="test") if it.category == "reasoning"
    ]
    score = {
        name: evaluate(
            TransformersBackend(trained_zoo / name, batch_size=64, max_new_tokens=24), items
        )
        .table()["reasoning"]
        .score
        for name in ("father", MOTHER_COLLAPSED)
    }
    assert score[MOTHER_COLLAPSED] > score["father"] + 0.08
