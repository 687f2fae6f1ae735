"""The guard set and the selection split: what they hold, that selection never touches quoted test items, and the
one-line errors for files that cannot be used."""

import json
import math
from pathlib import Path

import pytest
import torch

from selfdistill.evaluation.drift import drift_sample, mean_loglik, retained
from selfdistill.evaluation.evaluate import evaluate_tasks, subset_indices
from selfdistill.evaluation.guard import (
    DEFAULT_PRIOR,
    GuardError,
    item_key,
    resolve_guards,
    resolve_selection,
    subset,
)
from selfdistill.evaluation.tasks import TASKS


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _keys(items) -> set[str]:
    return {item_key(item) for item in items}


def test_a_registered_skill_is_guarded_by_the_quick_prior_and_its_near_task():
    guards = resolve_guards("record_json")
    assert [(g.name, g.origin) for g in guards] == [("prior_probe", "prior"), ("near_record_json", "near")]
    for guard in guards:
        everything = TASKS[guard.name](Path(".")).test_examples()
        assert not _keys(guard.selection_items) & _keys(guard.test_items)
        assert _keys(guard.selection_items) | _keys(guard.test_items) == _keys(everything)
        assert guard.n == len(everything) // 2 and guard.resolution == pytest.approx(1 / guard.n)
        assert guard.selection_task().test_examples() == list(guard.selection_items)
        assert guard.test_task().test_examples() == list(guard.test_items)
    assert (guards[0].n, len(guards[0].test_items)) == (19, 19)  # prior_probe's 38 questions
    assert DEFAULT_PRIOR == ("prior_probe",)


def test_the_halves_are_fixed_and_a_limit_caps_both_sides():
    first, again = resolve_guards(None, limit=8), resolve_guards(None, limit=8)
    assert [g.name for g in first] == ["prior_probe"]
    assert first[0].selection_items == again[0].selection_items
    assert first[0].n == 8 and len(first[0].test_items) == 8 and first[0].resolution == 0.125


def test_an_earlier_stage_selects_on_its_validation_split_and_is_tested_on_its_test_split():
    guards = {g.name: g for g in resolve_guards("ticket_line", earlier=["record_json"], limit=24)}
    assert list(guards) == ["prior_probe", "near_ticket_line", "record_json"]
    stage = guards["record_json"]
    task = TASKS["record_json"](Path("."))
    assert stage.origin == "stage"
    assert _keys(stage.selection_items) <= _keys(task.validation_examples())
    assert _keys(stage.test_items) <= _keys(task.test_examples())
    assert stage.n == 24 and stage.resolution == pytest.approx(1 / 24)


def test_keep_a_user_file_scored_by_answer_or_by_completion_with_a_named_scorer(tmp_path):
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(10)]
    answered = _write(tmp_path / "sums.jsonl", rows)
    demos = _write(tmp_path / "old.jsonl", [{"prompt": f"Say {i}.", "completion": f"{i}"} for i in range(6)])
    guards = {g.name: g for g in resolve_guards(None, keep=[str(answered), f"{demos}:exact", str(answered)])}
    assert list(guards) == ["prior_probe", "sums", "old"]  # named twice, guarded once
    assert guards["sums"].origin == "keep" and guards["sums"].n == 5
    old = guards["old"]
    item = old.selection_items[0]
    assert item.answer == item.completion
    assert old.task.score(item, item.completion) == {"acc": 1.0}
    assert old.task.score(item, "something else") == {"acc": 0.0}


def test_bad_keep_entries_are_one_line_errors_naming_the_option_and_file(tmp_path):
    demos = _write(tmp_path / "demos.jsonl", [{"prompt": "Hi", "completion": "Hello"}] * 4)
    cases = [
        (str(tmp_path / "missing.jsonl"), r"--keep .*missing\.jsonl: file not found"),
        (str(demos), r"--keep .*demos\.jsonl: .*demos\.jsonl:1: no 'answer' .*name a scorer"),
        (f"{demos}:fuzzy", r"--keep .*unknown scorer 'fuzzy'"),
        ("no_such_task", r"--keep no_such_task: unknown task"),
        ("record_json", r"--keep record_json: record_json is the task being learned"),
    ]
    for spec, message in cases:
        with pytest.raises(GuardError, match=message) as err:
            resolve_guards("record_json", keep=[spec])
        assert "\n" not in str(err.value)


def test_keep_a_data_set_task_splits_its_choice_items(data_dir):
    guard = resolve_guards(None, keep=["arc_easy"], prior=(), limit=20, data_dir=data_dir)[0]
    assert guard.name == "arc_easy" and guard.n == 20 and len(guard.test_items) == 20
    assert not {i.id for i in guard.selection_items} & {i.id for i in guard.test_items}
    assert guard.selection_task().test_items() == list(guard.selection_items)


def test_a_registered_task_selects_on_its_validation_split_with_the_eval_subset():
    selection = resolve_selection("record_json", limit=24)
    validation = TASKS["record_json"](Path(".")).validation_examples()
    assert selection.source == "validation split of record_json" and selection.train is None
    assert selection.task.test_examples() == [validation[i] for i in subset_indices(len(validation), 24, 0)]
    assert subset(validation, 24, 0) == selection.task.test_examples()
    assert selection.n == 24 and selection.resolution == pytest.approx(1 / 24)


def test_user_data_holds_out_a_seeded_tenth_and_returns_the_rest_to_train_on(tmp_path):
    rows = [{"prompt": f"Echo {i}.", "completion": f"{i}"} for i in range(100)]
    data = _write(tmp_path / "echo.jsonl", rows)
    selection = resolve_selection(str(data), seed=3)
    held = selection.task.test_examples()
    assert selection.n == 10 and len(selection.train) == 90
    assert _keys(held).isdisjoint(_keys(selection.train))
    assert len(_keys(held) | _keys(selection.train)) == 100
    assert held == resolve_selection(str(data), seed=3).task.test_examples()
    assert held != resolve_selection(str(data), seed=4).task.test_examples()
    assert selection.task.score(held[0], held[0].completion) == {"acc": 1.0}  # against the demonstration
    assert "hold-out of 10 of 100 training rows" in selection.source


def test_too_few_rows_to_hold_out_ask_for_a_selection_file(small_jsonl):
    with pytest.raises(GuardError, match=r"4 rows are too few .* pass --selection FILE"):
        resolve_selection(str(small_jsonl))


def test_a_selection_file_that_overlaps_the_test_items_is_refused(tmp_path):
    test_prompt = TASKS["record_json"](Path(".")).test_examples()[5].question
    sel = _write(tmp_path / "sel.jsonl", [{"prompt": test_prompt, "answer": "{}"}, {"prompt": "new", "answer": "{}"}])
    with pytest.raises(GuardError, match=r"--selection .*sel\.jsonl: 1 of its 2 items are test items of record_json"):
        resolve_selection("record_json", selection=str(sel))
    rows = [{"prompt": f"Echo {i}.", "completion": f"{i}", "answer": f"{i}"} for i in range(30)]
    data, test = _write(tmp_path / "d.jsonl", rows), _write(tmp_path / "t.jsonl", rows[:3])
    with pytest.raises(GuardError, match=r"--selection .*d\.jsonl: 3 of its 30 items are test items of t"):
        resolve_selection(str(data), selection=str(data), test=f"{test}:exact")
    fine = resolve_selection(str(data), selection=str(_write(tmp_path / "s.jsonl", rows[3:9])), test=str(test))
    assert fine.n == 6 and fine.train is None


# ---------------------------------------------------------------- the label-free guard


def test_the_drift_sample_is_fixed_and_its_two_parts_are_disjoint(data_dir):
    sample = drift_sample(data_dir)
    assert sample.n == len(sample.test) == 32 and sample.resolution == 0.0 and sample.name == "drift"
    assert not set(sample.selection) & set(sample.test)
    assert sample == drift_sample(data_dir)
    assert all(len(text.split()) > 20 for text in sample.selection)  # passages, not last words


def test_the_drift_guard_without_its_data_is_a_one_line_error(tmp_path):
    with pytest.raises(GuardError, match=r"drift guard: .*lambada.* not found"):
        drift_sample(tmp_path)


def test_retained_is_relative_per_token_probability():
    assert retained(-2.5, -2.5) == 1.0
    assert retained(-2.6, -2.5) == pytest.approx(math.exp(-0.1))
    assert 1 - retained(-2.5 - 0.0513, -2.5) == pytest.approx(0.05, abs=1e-3)  # a 0.05 budget ≈ 0.051 nats a token


def test_mean_loglik_pools_tokens_and_is_unchanged_by_batching_and_padding(tiny):
    model, tok = tiny
    texts = ["The cat sat on the mat.", "A", "Rain fell all night over the quiet harbour town.", "Hello there, friend."]
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:  # naive: one unpadded sequence at a time, a Python sum over its tokens
            ids = [prefix, *tok.encode(text, add_special_tokens=False)[:6]]
            logp = model(input_ids=torch.tensor([ids])).logits[0].double().log_softmax(-1)
            total += sum(float(logp[t - 1, ids[t]]) for t in range(1, len(ids)))
            count += len(ids) - 1
    model.train()
    batched = mean_loglik(model, tok, texts, max_tokens=6, batch_size=3)
    assert model.training  # the caller's mode is restored
    model.eval()
    assert batched == pytest.approx(total / count, abs=1e-4)
    assert mean_loglik(model, tok, texts, max_tokens=6, batch_size=1) == pytest.approx(batched, abs=1e-5)
    assert mean_loglik(model, tok, texts, max_tokens=2) != pytest.approx(batched, abs=1e-6)  # cut at max_tokens


def test_guards_and_the_selection_split_score_through_evaluate_tasks(tiny, data_dir):
    model, tok = tiny
    guards = resolve_guards("record_json", keep=["arc_easy"], limit=2, data_dir=data_dir)
    selection = resolve_selection("record_json", limit=3)
    tasks = [g.selection_task() for g in guards] + [g.test_task() for g in guards[:1]] + [selection.task]
    for task in tasks:
        task.max_new_tokens = 2  # an instance attribute, as the runner sets it: a random model's text is not read
    results = [evaluate_tasks(model, tok, [task], progress=False)[task.name] for task in tasks]
    assert [r["n"] for r in results] == [2, 2, 2, 2, 3]
    assert all(0.0 <= r["metrics"][r["primary"]] <= 1.0 for r in results)
    assert guards[0].task.test_examples() != guards[0].selection_task().test_examples()  # the original is untouched


def test_the_start_models_fingerprint_survives_a_save_that_kept_its_weights(tmp_path):
    """A stage that kept step 0 saves the start weights under a config naming its run: the next stage's step-0
    scores are then read from the cache, not computed again. Other weights are another fingerprint."""
    from selfdistill.evaluation.points import fingerprint
    from selfdistill.models import load_model

    model, tok = load_model("tiny-random")
    model.config.selfdistill = {"method": "sft", "kept_step": 0}
    model.save_pretrained(tmp_path / "stage1")
    tok.save_pretrained(tmp_path / "stage1")
    again, _ = load_model(str(tmp_path / "stage1"))
    assert fingerprint(again) == fingerprint(load_model("tiny-random")[0])
    with torch.no_grad():
        next(again.parameters()).add_(1e-3)
    assert fingerprint(again) != fingerprint(model)
