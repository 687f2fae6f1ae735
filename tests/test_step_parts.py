"""The training step built from parts chosen at setup: which objective and terms a config gets, the loss mask, the
phase timer, and the per-step hooks (tests/test_train.py and tests/test_recipes.py run the parts end to end)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from selfdistill.config import TrainConfig
from selfdistill.models import load_model
from selfdistill.training.anchor import anchor_reference, load_anchor
from selfdistill.training.completions import Completions
from selfdistill.training.loop import StepState, train
from selfdistill.training.objectives import NLL, HeadForwardKL, LogitsDivergence, TaskBatch
from selfdistill.training.parts import build_parts, tokenize
from selfdistill.training.ranks import Ranks
from selfdistill.training.runlog import PhaseTimer
from selfdistill.training.setup import load_training_examples
from selfdistill.training.teacher import Teacher
from selfdistill.training.terms import ReplayAnchor

# the grouped config reads a flat mapping; before the groups land, the flat constructor takes the same keys
_config = getattr(TrainConfig, "from_mapping", lambda values: TrainConfig(**values))
FAST = {"model": "tiny-random", "batch_size": 2, "max_new_tokens": 6, "progress": False, "precision": "fp32"}


@pytest.mark.parametrize(
    ("options", "objective", "fused_anchor"),
    [
        ({"method": "sft"}, NLL, None),
        ({"method": "seqkd"}, NLL, None),
        ({"method": "sdft"}, HeadForwardKL, None),
        ({"method": "sdft", "fused_head": False}, LogitsDivergence, None),
        ({"method": "sdft", "divergence": "reverse"}, LogitsDivergence, None),
        ({"method": "sdft", "anchor": "general_chat"}, HeadForwardKL, True),
        ({"method": "sft", "anchor": "general_chat"}, NLL, False),
    ],
    ids=["sft", "seqkd", "sdft", "sdft-logits", "sdft-reverse", "sdft+anchor", "sft+anchor"],
)
def test_the_objective_and_terms_are_chosen_once_from_the_config(
    small_jsonl, tmp_path, options, objective, fused_anchor
):
    cfg = _config({"data": str(small_jsonl), "output": tmp_path / "out", **FAST, **options})
    model, tok = load_model("tiny-random")
    examples = load_training_examples(cfg.data, cfg.source)
    anchor = load_anchor(cfg.replay.anchor, None, examples) if cfg.replay.anchor else []
    teacher = Teacher(model, cfg.teaching.teacher if cfg.method != "sft" else "live", cfg.teaching.ema_rate)
    parts = build_parts(
        cfg,
        tokenize(cfg, tok, model, examples, anchor),
        model=model,
        tok=tok,
        teacher=teacher,
        reference=anchor_reference(model, teacher) if anchor else None,
        ranks=Ranks(),
        bf16=False,
        step=0,
        total_steps=2,
        accept=None,
        timer=PhaseTimer(torch.device("cpu")),
    )
    assert type(parts.objective) is objective
    if fused_anchor is None:
        assert parts.terms == []
    else:  # the anchor's term runs its KL as the objective runs its own: heads inside the loss, or on logits
        (term,) = parts.terms
        assert isinstance(term, ReplayAnchor) and term.fused is fused_anchor
    # sft with nothing to sample has no engine to hand weights to
    assert bool(parts.synced) == (cfg.method != "sft" or bool(anchor))


def test_the_loss_mask_drops_rejected_rows_and_the_first_tokens():
    batch = Completions(rows=[0, 1], ids=[[5, 6, 7, 8], [9, 10]], hit_cap=[False, False], sampler_logprobs=[])
    batch.keep = [True, False]
    task = TaskBatch.of(batch, [[1, 2], [3]], [], pad_id=0, device=torch.device("cpu"))
    assert task.mask(0).tolist() == [[1, 1, 1, 1], [0, 0, 0, 0]]
    assert task.mask(2).tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    assert task.student.completion_mask_BC.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]  # the packed rows are left alone


def test_a_phase_entered_inside_another_pauses_it():
    timer = PhaseTimer(torch.device("cpu"))
    with timer("student"):
        time.sleep(0.05)
        with timer("tis"):
            time.sleep(0.1)
        time.sleep(0.05)
    with timer("student"):
        time.sleep(0.05)
    seconds = timer.pop()
    assert list(seconds) == ["seconds_student", "seconds_tis"]
    assert 0.15 <= seconds["seconds_student"] < 0.25  # 3 x 0.05 s, without the nested 0.1 s
    assert 0.1 <= seconds["seconds_tis"] < 0.2
    assert timer.pop() == {}


def test_a_hook_sees_every_step_and_can_end_training(small_jsonl, tmp_path):
    seen: list[StepState] = []

    def stop_after_two(step: int, state: StepState) -> bool:
        seen.append(state)
        return step == 2

    out = tmp_path / "out"
    cfg = _config({"data": str(small_jsonl), "output": out, **FAST, "method": "sft", "max_steps": 5, "save_every": 0})
    assert train(cfg, hooks=[stop_after_two]) == out
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2]  # no step after the one a hook ended
    assert [s.step for s in seen] == [1, 2] and all(s.total_steps == 5 for s in seen)
    assert [s.record for s in seen] == logged  # the hook sees the line just logged
    assert all(s.output == out and s.ranks.world == 1 and s.teacher.mode == "live" for s in seen)
    assert (out / "model.safetensors").is_file()  # saved as at the end of a run
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]


def test_a_hook_can_write_a_checkpoint_of_its_step(small_jsonl, tmp_path: Path):
    out = tmp_path / "out"
    cfg = _config({"data": str(small_jsonl), "output": out, **FAST, "method": "sft", "max_steps": 3, "save_every": 0})

    def save_the_first(step: int, state: StepState) -> bool:
        if step == 1:
            state.save_checkpoint(step)
        return False

    train(cfg, hooks=[save_the_first])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001", "step-000003"]
