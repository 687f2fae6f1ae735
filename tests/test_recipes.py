"""Recipes beyond the paper: the replay anchor, the teacher-mix warm start, filtered seqkd and teacher-corrected
rollouts (whose sampler is tested in test_corrected.py), each against a hand-made reference, then trained end to
end on tiny-random."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch

from selfdistill import DEFAULT_MODEL
from selfdistill.config import AdapterConfig, TrainConfig
from selfdistill.data import DataError, Example
from selfdistill.evaluation.tasks import SUITES, get_task
from selfdistill.evaluation.tasks.anchors import ANCHOR_POOLS, general_chat
from selfdistill.evaluation.tasks.base import user_turn
from selfdistill.training.anchor import anchor_reference, load_anchor
from selfdistill.training.completions import mix_fraction, teacher_rows
from selfdistill.training.loop import train
from selfdistill.training.losses import distill_loss, masked_mean
from selfdistill.training.objectives import joint_forward
from selfdistill.training.rollout import completion_hidden, completion_logits, output_head, pack
from selfdistill.training.setup import wrap_lora
from selfdistill.training.teacher import Teacher


def test_teacher_rows_take_the_fraction_in_expectation():
    rng = random.Random(0)
    draws = [teacher_rows(0.3, 8, rng) for _ in range(4000)]
    counts = [len(d) for d in draws]
    assert set(counts) == {2, 3}  # 0.3 · 8 = 2.4: two or three rows, never more or fewer
    assert abs(sum(counts) / (8 * len(counts)) - 0.3) < 0.01
    assert all(d == sorted(set(d)) and all(0 <= i < 8 for i in d) for d in draws)
    assert teacher_rows(0.0, 8, rng) == []
    assert teacher_rows(1.0, 8, rng) == list(range(8))


def test_mix_fraction_constant_or_falling_to_zero():
    assert [mix_fraction(0.6, None, s, 10) for s in (0, 5, 9)] == [0.6, 0.6, 0.6]
    got = [mix_fraction(0.6, 0.5, s, 10) for s in range(10)]
    assert got[:6] == pytest.approx([0.6, 0.48, 0.36, 0.24, 0.12, 0.0])
    assert got[6:] == [0.0] * 4


def test_anchor_term_gradient_is_weight_times_probability_difference():
    torch.manual_seed(0)
    A, C, V, weight = 3, 4, 7, 0.7
    student_ACV = torch.randn(A, C, V, requires_grad=True)
    ref_ACV = torch.randn(A, C, V)
    mask_AC = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    ids_AC = torch.randint(V, (A, C))
    loss = weight * masked_mean(distill_loss(student_ACV, ref_ACV, ids_AC), mask_AC)
    loss.backward()
    # KL(ref ‖ student) per token has gradient softmax(student) − softmax(ref) in the student's logits; the
    # masked mean averages each row's tokens, then the rows that have any (here 2)
    per_token_AC = mask_AC / mask_AC.sum(1, keepdim=True).clamp(min=1) / 2
    expected = weight * (student_ACV.softmax(-1) - ref_ACV.softmax(-1)) * per_token_AC[..., None]
    torch.testing.assert_close(student_ACV.grad, expected.detach())


def test_joint_forward_equals_separate_forwards(tiny):
    model, tok = tiny
    task_rows = ([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14]])
    anchor_rows = ([[20, 21]], [[22, 23, 24, 25, 26]])
    task, anchor = pack(*task_rows, tok.pad_token_id), pack(*anchor_rows, tok.pad_token_id)
    model.eval()
    with torch.no_grad():
        for per_position in (completion_logits, completion_hidden):
            task_BC_, anchor_AC_ = joint_forward(
                per_position, model, [task_rows, anchor_rows], tok.pad_token_id, torch.device("cpu")
            )
            torch.testing.assert_close(task_BC_, per_position(model, task), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(anchor_AC_, per_position(model, anchor), atol=1e-5, rtol=1e-4)


def _nudge(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


def test_anchor_reference_stays_the_start_model(tiny):
    base, tok = tiny
    batch = pack([[5, 6, 7]], [[8, 9]], tok.pad_token_id)
    with torch.no_grad():
        start = completion_logits(base.eval(), batch)

    full = copy.deepcopy(base)
    reference = anchor_reference(full, Teacher(full, "live"))
    _nudge(full)
    torch.testing.assert_close(reference(batch), start)
    assert not torch.allclose(completion_logits(full, batch), start)

    lora = wrap_lora(copy.deepcopy(base), AdapterConfig(lora=True), DEFAULT_MODEL)
    reference = anchor_reference(lora, Teacher(lora, "ema"))
    _nudge(lora)  # moves the adapters (the only trainable weights)
    lora.train()
    torch.testing.assert_close(reference(batch), start)
    torch.testing.assert_close(output_head(reference.model)(reference.hidden(batch)), start)  # the head's input
    assert lora.training and all(m.training for m in lora.modules()), "train mode restored"

    frozen = Teacher(full, "frozen")
    assert anchor_reference(full, frozen).model is frozen.model  # the frozen teacher is the start model, no copy


def test_load_anchor_sources_and_overlap(tmp_path: Path):
    pool = load_anchor("general_chat", None, [])
    assert len(pool) == 600 and len({ex.messages[0]["content"] for ex in pool}) == 600
    assert [ex.messages for ex in pool] == [ex.messages for ex in general_chat()]  # fixed order

    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"prompt": "Tell me about owls."}) + "\n" + json.dumps({"prompt": "Hi!"}) + "\n")
    assert [ex.question for ex in load_anchor(str(path), None, [])] == ["Tell me about owls.", "Hi!"]

    task_prompts = load_anchor("record_json", None, [])
    assert len(task_prompts) == len(get_task("record_json").train_examples())

    training = [Example(user_turn("Hi!"), "Hello.", source="train.jsonl:4")]
    with pytest.raises(DataError, match=r"a.jsonl:2: prompt is also a training prompt \(train.jsonl:4\)"):
        load_anchor(str(path), None, training)
    with pytest.raises(DataError, match="has no training prompts"):
        load_anchor("arc_easy", None, [])


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def _evaluated_texts(data_dir: Path) -> list[str]:
    """Every prompt, context and choice the demo, the forgetting benchmark and the prior suite evaluate."""
    from selfdistill.evaluation.tasks.prior import NEAR_TASKS
    from selfdistill.evaluation.tasks.procedural import SKILL_TASKS

    names = ["prior_probe", "ifeval", *NEAR_TASKS, *SKILL_TASKS, *SUITES["prior"]]
    texts = []
    for name in names:
        task = get_task(name, data_dir)
        if task.kind == "choice":
            texts += [r.context + r.continuation for item in task.test_items() for r in item.requests]
            continue
        splits = [task.test_examples(), task.train_examples()]
        if task.has_validation:
            splits.append(task.validation_examples())
        texts += [m["content"] for split in splits for ex in split for m in ex.messages]
        texts += [ex.context for split in splits for ex in split if ex.context]
    return texts


def test_general_chat_shares_no_text_with_any_evaluated_item(data_dir):
    evaluated = "\0".join(_normalized(t) for t in _evaluated_texts(data_dir))
    assert len(evaluated) > 1_000_000  # the suite's data really loaded
    shared = [ex.question for ex in ANCHOR_POOLS["general_chat"]() if _normalized(ex.question) in evaluated]
    assert not shared, shared[:5]


# ---------------------------------------------------------------- end to end on tiny-random

TINY = {"model": "tiny-random", "batch_size": 2, "max_new_tokens": 6, "progress": False, "save_every": 0}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("options", "logged"),
    [
        ({"method": "sdft", "anchor": "general_chat", "anchor_weight": 1.0, "anchor_batch_size": 2}, "anchor_kl"),
        ({"method": "sft", "anchor": "general_chat", "anchor_batch_size": 1}, "anchor_kl"),
        ({"method": "sdft", "rollout_correction": "topk", "correction_k": 5}, "acceptance_rate"),
        ({"method": "sdft", "teacher_mix": 0.5, "teacher_mix_until": 1.0}, "teacher_rows"),
        ({"method": "seqkd", "seqkd_filter": True, "data": "record_json"}, "seqkd_kept"),
    ],
    ids=["sdft+anchor", "sft+anchor", "corrected", "teacher-mix", "filtered-seqkd"],
)
def test_recipe_trains_and_logs(options, logged, small_jsonl, tmp_path):
    cfg = TrainConfig.from_mapping(
        {"data": str(small_jsonl), **TINY, **options, "max_steps": 2, "output": tmp_path / "out"}
    )
    train(cfg)
    rows = _rows(tmp_path / "out" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    values = [r[logged] for r in rows]
    # step 1's anchor KL is of the model against itself: zero up to rounding (either sign)
    assert all(0.0 <= v <= 1.0 for v in values) if logged != "anchor_kl" else all(v >= -1e-6 for v in values)
    if logged == "anchor_kl":
        assert values[0] == pytest.approx(0.0, abs=1e-6)  # before the first update the student is the start model
        assert values[1] > 0.0
    if logged == "teacher_rows":
        assert [r["teacher_mix"] for r in rows] == [0.5, 0.25]
    assert (tmp_path / "out" / "model.safetensors").is_file()
