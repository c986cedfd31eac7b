"""The issue's check on the trained zoo pair (slow: builds the zoo unless it is there,
see the ``trained_zoo`` fixture)."""

import numpy as np
import pytest

from darwinmerge.mri import MriConfig, compare_models

pytestmark = pytest.mark.slow


def test_zoo_pair_mri(trained_zoo):
    zoo = trained_zoo
    cfg = MriConfig(probes=(f"zoo@{zoo}",))
    r = compare_models(zoo / "father", zoo / "mother", cfg, base=zoo / "base")
    c = r.comparison
    reasoning = c.categories.index("REASONING")
    # the reasoning-tuned mother is more important than the father on REASONING somewhere
    assert (c.advantage[reasoning] < 0).any()
    # both directions of the swap scan ran for every layer and category
    assert np.isfinite(c.swap_ab).all() and np.isfinite(c.swap_ba).all()
    # completion-only loss (the default): the reasoning-tuned mother predicts reasoning
    # traces and answers better, and her layers win REASONING in the swap scan somewhere
    # (with the all-token loss the father's last layer looked better for every category)
    assert c.loss_tokens == "completion"
    assert r.scan_b.loss[reasoning] < r.scan_a.loss[reasoning]
    assert (c.swap_advantage[reasoning] < 0).any()
    # MoE health numbers are in range
    for s in (r.scan_a, r.scan_b):
        assert ((s.router_entropy > 0) & (s.router_entropy <= 1)).all()
        assert (s.dead_interval[:, 0] <= s.dead_fraction + 1e-12).all()
        assert (s.dead_fraction <= s.dead_interval[:, 1] + 1e-12).all()
    assert (r.weights.task_cosine[np.isfinite(r.weights.task_cosine)] > 0).all()
