"""The forgetting budget's rule, the kept point and patience, on hand-made scores."""

import pytest

from selfdistill.continual.budget import (
    BudgetError,
    EvalPoint,
    GuardBase,
    Patience,
    assess,
    baseline,
    check_budget,
    choose,
    drops,
    within_budget,
)

# The issue's SFT lr 3e-5 run on record_json (24 items per task): skill / near_record_json / prior_probe by step.
SFT = [
    EvalPoint(0, 0.00, {"near_record_json": 0.88, "prior_probe": 0.96}),
    EvalPoint(3, 0.00, {"near_record_json": 0.71, "prior_probe": 0.96}),
    EvalPoint(6, 1.00, {"near_record_json": 0.92, "prior_probe": 0.96}),
    EvalPoint(9, 1.00, {"near_record_json": 1.00, "prior_probe": 0.88}),
    EvalPoint(12, 1.00, {"near_record_json": 0.88, "prior_probe": 0.88}),
    EvalPoint(15, 1.00, {"near_record_json": 0.21, "prior_probe": 0.88}),
]
BASE = baseline(SFT[0].guards, {"near_record_json": 1 / 24, "prior_probe": 1 / 24})


def test_drops_are_reference_minus_now():
    assert drops(SFT[5], BASE) == pytest.approx({"near_record_json": 0.67, "prior_probe": 0.08})
    assert drops(SFT[2], BASE) == pytest.approx({"near_record_json": -0.04, "prior_probe": 0.0})


def test_the_issue_run_keeps_step_6_where_the_skill_arrived_and_the_neighbours_stayed():
    kept = choose(SFT, BASE, 0.05)
    assert kept.step == 6
    # step 9 ties the skill at 1.00 but lost 2 items of prior_probe (0.08 > max(0.05, 1/24))
    assert not within_budget(SFT[3], BASE, 0.05)
    assert not within_budget(SFT[5], BASE, 0.05)


def test_gains_on_one_guard_do_not_pay_for_losses_on_another():
    base = baseline({"a": 0.5, "b": 0.5}, {"a": 0.01, "b": 0.01})
    point = EvalPoint(3, 1.0, {"a": 0.9, "b": 0.44})  # +0.40 on a, -0.06 on b
    result = assess(point, base, 0.05)
    assert result.mean_drop == pytest.approx(0.03)  # (0 + 0.06) / 2, not (-0.40 + 0.06) / 2
    assert result.worst == "b"
    assert not result.within  # b alone lost 0.06 > max(0.05, 0.01)


def test_one_item_is_tolerated_where_one_item_is_worth_more_than_the_budget():
    base = baseline({"near": 1.0, "prior": 1.0}, {"near": 1 / 16, "prior": 1 / 16})
    one_item = EvalPoint(3, 0.5, {"near": 15 / 16, "prior": 1.0})
    two_items = EvalPoint(6, 0.5, {"near": 14 / 16, "prior": 1.0})
    assert within_budget(one_item, base, 0.05)  # mean 0.031, and 0.0625 <= max(0.05, 1/16)
    assert not within_budget(two_items, base, 0.05)  # 0.125 on one guard
    # one item at 24 items, a difference of 0/1 means (1/24 + 7e-17 in floats), sits on a budget of 1/24: allowed
    base24 = baseline({"g": 23 / 24}, {"g": 1 / 24})
    assert 23 / 24 - 22 / 24 > 1 / 24
    assert within_budget(EvalPoint(1, 0.0, {"g": 22 / 24}), base24, 1 / 24)


def test_one_wiped_guard_is_not_hidden_by_an_average_over_many():
    names = [f"g{i}" for i in range(10)]
    base = baseline(dict.fromkeys(names, 0.9), dict.fromkeys(names, 1 / 40))
    point = EvalPoint(5, 1.0, {**dict.fromkeys(names, 0.9), "g0": 0.4})
    result = assess(point, base, 0.05)
    assert result.mean_drop == pytest.approx(0.05)
    assert not result.within and result.worst == "g0"


def test_a_continuous_guard_gets_the_plain_bound():
    base = baseline({"drift": 1.0}, {})
    assert base["drift"] == GuardBase(1.0, 0.0)
    assert within_budget(EvalPoint(1, 0.0, {"drift": 0.951}), base, 0.05)
    assert not within_budget(EvalPoint(1, 0.0, {"drift": 0.949}), base, 0.05)


def test_step_zero_always_qualifies_and_ties_go_to_the_earlier_step():
    base = baseline({"g": 0.9}, {"g": 0.1})
    # a re-evaluated start that reads a little lower still qualifies; a later point with the same skill does not win
    points = [EvalPoint(4, 0.0, {"g": 0.9}), EvalPoint(0, 0.0, {"g": 0.2}), EvalPoint(8, 0.0, {"g": 0.9})]
    assert choose(points, base, 0.05).step == 0
    points = [EvalPoint(0, 0.1, {"g": 0.9}), EvalPoint(4, 0.5, {"g": 0.9}), EvalPoint(8, 0.5, {"g": 0.9})]
    assert choose(points, base, 0.05).step == 4
    with pytest.raises(ValueError, match="step 0"):
        choose(points[1:], base, 0.05)


def test_an_earlier_stage_skill_is_measured_from_its_own_stage_end():
    start = {"prior_probe": 0.95}
    base = baseline(start, {"prior_probe": 1 / 38, "record_json": 1 / 24}, stage_ends={"record_json": 0.92})
    assert base["prior_probe"].score == 0.95 and base["record_json"].score == 0.92
    assert drops(EvalPoint(6, 0.8, {"prior_probe": 0.95, "record_json": 0.83}), base)["record_json"] == pytest.approx(
        0.09
    )


def test_bad_budgets_and_guard_sets_are_one_line_errors_naming_the_option():
    for bad in (-0.01, 1.0, 1.5, float("nan"), "0.1"):
        with pytest.raises(BudgetError, match="--forgetting-budget"):
            check_budget(bad)
    assert check_budget(0) == 0.0
    with pytest.raises(BudgetError, match="guard"):
        within_budget(EvalPoint(0, 0.0, {}), {}, 0.05)
    with pytest.raises(ValueError, match="prior_probe"):
        drops(EvalPoint(3, 0.0, {}), baseline({"prior_probe": 1.0}, {}))
    with pytest.raises(BudgetError, match="--patience"):
        Patience(0, 0.05)


def test_patience_counts_points_that_broke_the_budget_or_did_not_improve():
    patience = Patience(2, 0.05)
    stops = [patience.update(point, BASE) for point in SFT]
    # step 0 sets the best (0.0); 3 no better (1); 6 improves (0); 9 and 12 tie or break (1, 2): stop at step 12
    assert stops == [False, False, False, False, True, True]
    assert patience.best == 1.0


def test_a_better_skill_that_broke_the_budget_is_a_strike_and_not_the_new_best():
    patience = Patience(1, 0.05)
    assert not patience.update(SFT[0], BASE)
    broke = EvalPoint(3, 1.0, {"near_record_json": 0.21, "prior_probe": 0.96})
    assert patience.update(broke, BASE)
    assert (patience.best, patience.strikes) == (0.0, 1)
