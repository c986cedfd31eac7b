"""The repair loop with an injected scorer: a repair that lowers fitness is refused."""

import pytest

from darwinmerge.health import MoveLayerT, SetRouter, health_check, layer_t, repair
from darwinmerge.merge import Recipe, resolve_router

from .scans import MID, A, B, L, trio, zoo_like


def _verdict(changes):
    v = health_check(*trio(MID, A, B))
    v.prescription = list(changes)
    return v


def _scorer(calls):
    """0.8 for the recipe as given; +0.1 when L3's mlp t left 0.7; -0.2 with a router rule."""

    def score(recipe):
        calls.append(recipe)
        s = 0.8
        if abs(layer_t(recipe, 3, "experts", L) - 0.7) > 1e-9:
            s += 0.1
        if resolve_router(recipe, 2) != "merged":
            s -= 0.2
        return s

    return score


def test_a_repair_that_lowers_fitness_is_refused():
    recipe = zoo_like()
    calls = []
    v = _verdict([SetRouter(2, "B", "entropy")])
    res = repair(recipe, v, merge_and_score=_scorer(calls))
    assert not res.repaired and res.kept == []
    assert res.recipe is recipe
    assert res.baseline == pytest.approx(0.8) and res.score == pytest.approx(0.8)
    assert [a.kept for a in res.attempts] == [False]
    assert res.attempts[0].score == pytest.approx(0.6)
    assert len(calls) == 2  # baseline + the candidate


def test_a_repair_that_does_not_lower_fitness_is_kept_and_rechecked():
    recipe = zoo_like()
    change = MoveLayerT(3, "A", 0.5, "function loss")
    rechecked = []
    res = repair(
        recipe,
        _verdict([change]),
        merge_and_score=_scorer([]),
        recheck=lambda r: rechecked.append(r) or _verdict([]),
    )
    assert res.repaired and res.kept == [change]
    assert res.score == pytest.approx(0.9)
    assert layer_t(res.recipe, 3, "experts", L) == pytest.approx(0.35)
    assert rechecked == [res.recipe] and res.verdict_after is not None


def test_equal_score_is_kept_not_dropped():
    recipe = zoo_like()
    res = repair(recipe, _verdict([MoveLayerT(1, "A", 0.5, "x")]), merge_and_score=lambda r: 0.5)
    assert res.repaired and res.score == 0.5


def test_a_change_that_changes_nothing_is_not_kept():
    # weights that sum to zero have no t to move: the move leaves the recipe as it is
    recipe = Recipe.parse(
        {
            "method": "linear",
            "parents": [{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}],
            "parameters": {"weight": 0.0},
        }
    )
    scored: list[Recipe] = []
    res = repair(
        recipe,
        _verdict([MoveLayerT(1, "A", 0.5, "x")]),
        merge_and_score=lambda r: scored.append(r) or 0.5,
    )
    assert not res.repaired and res.recipe == recipe and scored == [recipe]


def test_one_by_one_keeps_the_helpful_change_only():
    recipe = zoo_like()
    good, bad = MoveLayerT(3, "A", 0.5, "function loss"), SetRouter(2, "B", "entropy")
    res = repair(recipe, _verdict([good, bad]), merge_and_score=_scorer([]))
    # together: 0.8 + 0.1 - 0.2 = 0.7 < 0.8 refused; alone: good 0.9 kept, bad 0.7 refused
    assert [round(a.score, 6) for a in res.attempts] == [0.7, 0.9, 0.7]
    assert [a.kept for a in res.attempts] == [False, True, False]
    assert res.kept == [good] and res.score == pytest.approx(0.9)
    assert resolve_router(res.recipe, 2) == "merged"
    res2 = repair(recipe, _verdict([good, bad]), merge_and_score=_scorer([]), one_by_one=False)
    assert not res2.repaired and res2.recipe is recipe


def test_nothing_prescribed_scores_once():
    calls = []
    res = repair(zoo_like(), _verdict([]), merge_and_score=_scorer(calls))
    assert len(calls) == 1 and not res.repaired and res.attempts == []


def test_rounds_follow_the_recheck_and_never_drop_the_score():
    recipe = zoo_like()
    first, second = MoveLayerT(3, "A", 0.5, "L3"), MoveLayerT(3, "A", 0.5, "L3 again")
    verdicts = iter([_verdict([second]), _verdict([])])
    scores = []

    def score(r):
        t = layer_t(r, 3, "experts", L)  # 0.7 -> 0.35 -> 0.175: 0.8, 0.9, 0.95
        s = {0.7: 0.8, 0.35: 0.9, 0.175: 0.95}[round(t, 6)]
        scores.append(s)
        return s

    res = repair(recipe, _verdict([first]), merge_and_score=score,
                 recheck=lambda r: next(verdicts), rounds=3)  # fmt: skip
    assert res.kept == [first, second] and res.score == pytest.approx(0.95)
    assert layer_t(res.recipe, 3, "experts", L) == pytest.approx(0.175)
    assert [a.reference for a in res.attempts] == [0.8, 0.9]
    assert res.verdict_after is not None and res.verdict_after.prescription == []
    # one round only (the default): the second prescription is not tried
    verdicts = iter([_verdict([second])])
    one = repair(recipe, _verdict([first]), merge_and_score=score, recheck=lambda r: next(verdicts))
    assert one.kept == [first] and one.score == pytest.approx(0.9)
