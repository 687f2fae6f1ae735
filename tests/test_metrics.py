"""Continual-learning metrics on hand-made accuracy matrices whose values are worked out by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from selfdistill.continual.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    learning_gain,
    matrix_from_results,
    prior_average,
    prior_drop,
    summarize,
)

FIXTURE = Path(__file__).parent / "fixtures" / "results_small" / "results.json"

# Three tasks, full run: row 0 = base, row i = after training task i-1.
R3 = np.array(
    [
        [0.10, 0.20, 0.00],  # base
        [0.80, 0.25, 0.05],  # after task 0
        [0.85, 0.90, 0.05],  # after task 1
        [0.60, 0.70, 0.85],  # after task 2 (the end)
    ]
)


def test_known_values_three_tasks():
    # ACC = (0.60 + 0.70 + 0.85) / 3 = 2.15 / 3
    assert average_accuracy(R3) == pytest.approx(2.15 / 3)
    # BWT = mean(R[3,0] - R[1,0], R[3,1] - R[2,1]) = mean(0.60 - 0.80, 0.70 - 0.90) = mean(-0.2, -0.2) = -0.2
    assert backward_transfer(R3) == pytest.approx(-0.2)
    # FWT = mean(R[1,1] - R[0,1], R[2,2] - R[0,2]) = mean(0.25 - 0.20, 0.05 - 0.00) = 0.05
    assert forward_transfer(R3) == pytest.approx(0.05)


def test_forgetting_vector_uses_the_peak_not_the_first_value():
    # task 0: max(R[1,0], R[2,0]) - R[3,0] = max(0.80, 0.85) - 0.60 = 0.25 (BWT used 0.80, forgetting the peak 0.85)
    # task 1: max(R[2,1]) - R[3,1] = 0.90 - 0.70 = 0.20
    # task 2: trained last, nothing after it → NaN
    np.testing.assert_allclose(forgetting(R3), [0.25, 0.20, np.nan])


def test_learning_gain_is_after_minus_just_before():
    # R[1,0]-R[0,0] = 0.70, R[2,1]-R[1,1] = 0.65, R[3,2]-R[2,2] = 0.80
    np.testing.assert_allclose(learning_gain(R3), [0.70, 0.65, 0.80])


def test_perfect_retention_has_zero_bwt_and_forgetting():
    # Each task goes 0 → 1 when trained and stays at 1: no transfer either way, nothing forgotten.
    R = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=float)
    assert average_accuracy(R) == 1.0
    assert backward_transfer(R) == 0.0
    assert forward_transfer(R) == 0.0
    np.testing.assert_array_equal(forgetting(R), [0.0, 0.0, np.nan])


def test_improvement_after_training_is_positive_bwt_and_negative_forgetting():
    # Task 0: 0.5 after its stage, 0.7 at the end → BWT = +0.2, forgetting = 0.5 - 0.7 = -0.2
    R = np.array([[0.0, 0.0], [0.5, 0.3], [0.7, 0.9]])
    assert backward_transfer(R) == pytest.approx(0.2)
    assert forgetting(R)[0] == pytest.approx(-0.2)
    assert forward_transfer(R) == pytest.approx(0.3)  # R[1,1] - R[0,1]


def test_single_task_transfer_is_undefined():
    R = np.array([[0.2], [0.7]])
    assert average_accuracy(R) == pytest.approx(0.7)
    assert math.isnan(backward_transfer(R))
    assert math.isnan(forward_transfer(R))
    assert np.isnan(forgetting(R)).all()


def test_partial_run_uses_the_last_row_it_has():
    # Stages 0..2 of a 3-task run (task 2 not trained yet): the end is row 2.
    R = R3[:3]
    assert average_accuracy(R) == pytest.approx((0.85 + 0.90 + 0.05) / 3)
    assert backward_transfer(R) == pytest.approx(0.85 - 0.80)  # only task 0 was followed by another stage
    # FWT over j = 1, 2: R[1,1]-R[0,1] = 0.05, R[2,2]-R[0,2] = 0.05 (task 2 measured just before its stage)
    assert forward_transfer(R) == pytest.approx(0.05)
    # task 0: max(R[1,0]) - R[2,0] = -0.05; tasks 1 and 2: no stage after theirs yet
    np.testing.assert_allclose(forgetting(R), [-0.05, np.nan, np.nan])
    np.testing.assert_allclose(learning_gain(R), [0.70, 0.65, np.nan])


def test_base_only_and_empty_runs_are_nan_not_errors():
    base = R3[:1]
    assert average_accuracy(base) == pytest.approx(0.1)
    assert math.isnan(backward_transfer(base)) and math.isnan(forward_transfer(base))
    assert np.isnan(forgetting(base)).all()
    empty = np.zeros((0, 3))
    assert math.isnan(average_accuracy(empty))
    assert math.isnan(prior_drop(empty))


def test_missing_cells_are_left_out_of_means():
    R = R3.copy()
    R[3, 1] = np.nan  # task 1 not measured at the end
    assert average_accuracy(R) == pytest.approx((0.60 + 0.85) / 2)
    assert backward_transfer(R) == pytest.approx(-0.2)  # only the task-0 term remains
    assert np.isnan(forgetting(R)[1])


def test_prior_average_and_drop():
    P = np.array([[0.8, 0.4], [0.6, 0.36], [0.5, 0.3]])
    np.testing.assert_allclose(prior_average(P), [0.60, 0.48, 0.40])
    assert prior_drop(P) == pytest.approx(0.20)  # 0.60 - 0.40: positive = capability lost
    assert np.isnan(prior_average(np.zeros((3, 0)))).all()  # no prior tasks


def test_non_matrix_input_is_rejected():
    with pytest.raises(ValueError, match="2-D"):
        backward_transfer(np.array([0.1, 0.2]))


def test_matrix_from_results_reads_the_primary_metric():
    results = json.loads(FIXTURE.read_text())
    R = matrix_from_results(results, "sft", ["skill_a", "skill_b", "arc_easy", "not_a_task"])
    # arc_easy's primary is acc_norm (0.40 at base), not acc (0.38); an unknown task is NaN
    np.testing.assert_allclose(R[0], [0.10, 0.05, 0.40, np.nan])
    stderr = matrix_from_results(results, "sft", ["skill_a"], field="stderr")
    np.testing.assert_allclose(stderr[:, 0], [0.042, 0.065, 0.065])


def test_matrix_from_results_places_rows_by_index():
    results = json.loads(FIXTURE.read_text())
    stages = results["methods"]["sdft"]["stages"]
    results["methods"]["sdft"]["stages"] = [stages[2], stages[0]]  # stage 1 missing, order shuffled
    R = matrix_from_results(results, "sdft", ["skill_a"])
    np.testing.assert_allclose(R[:, 0], [0.10, np.nan, 0.55])


def test_summarize_fixture():
    summary = summarize(json.loads(FIXTURE.read_text()))
    json.dumps(summary, allow_nan=False)  # NaN became None
    sft, sdft = summary["sft"], summary["sdft"]
    # sft: R = [[.10,.05],[.70,.10],[.30,.80]]; ACC = (.30+.80)/2, BWT = .30-.70, FWT = .10-.05
    assert sft["stages_done"] == 2
    assert sft["acc"] == pytest.approx(0.55)
    assert sft["bwt"] == pytest.approx(-0.40)
    assert sft["fwt"] == pytest.approx(0.05)
    assert sft["forgetting"]["skill_a"] == pytest.approx(0.40) and sft["forgetting"]["skill_b"] is None
    # prior: (.80+.40)/2 = .60 → (.60+.36)/2 = .48 → (.50+.30)/2 = .40
    assert sft["prior_by_stage"] == pytest.approx([0.60, 0.48, 0.40])
    assert sft["prior_drop"] == pytest.approx(0.20)
    # sdft: R = [[.10,.05],[.60,.08],[.55,.65]]; prior .60 → .59 → .57
    assert sdft["acc"] == pytest.approx(0.60)
    assert sdft["bwt"] == pytest.approx(-0.05)
    assert sdft["fwt"] == pytest.approx(0.03)
    assert sdft["prior_end"] == pytest.approx(0.57)
    assert sdft["prior_drop"] == pytest.approx(0.03)
