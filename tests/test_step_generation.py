"""One generation per optimizer step (completions.step_completions): micro-batches grouped into one engine call
hand each micro-batch back its own rows, and on tiny-random in fp32 those rows are the ones one call per micro-batch
samples, for the task rows, seqkd's teacher and the replay anchor, with the same training after. The warm start
draws its teacher rows per call, so there only each row's place is checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfdistill.config import ConfigError, TrainConfig
from selfdistill.training.completions import Completions, generation_groups, mixed, sampled, step_completions
from selfdistill.training.engines import Sampling, make_engine, seed_for
from selfdistill.training.loop import train

FAST = {"model": "tiny-random", "batch_size": 2, "max_new_tokens": 6, "progress": False, "precision": "fp32"}
TEXTS = ["Hello there friend", "What is two plus", "The capital of France is a city that", "Hi", "One", "Two words"]


def test_groups_hold_whole_micro_batches_up_to_the_cap():
    assert generation_groups([2, 2, 2, 2], None) == [[0, 1, 2, 3]]
    assert generation_groups([2, 2, 2, 2], 4) == [[0, 1], [2, 3]]
    assert generation_groups([2, 2, 2], 5) == [[0, 1], [2]]
    assert generation_groups([3, 3], 2) == [[0], [1]]  # a micro-batch over the cap is never split
    assert generation_groups([], None) == []


def test_split_gives_each_slice_its_rows_with_origins_from_its_own_start():
    logits = torch.arange(5 * 4 * 1, dtype=torch.float32).reshape(5, 4, 1)
    joined = Completions(
        rows=[7, 3, 3, 9, 7],
        ids=[[1], [2, 2], [3, 3, 3], [4], [5, 5]],
        hit_cap=[False, True, False, False, True],
        sampler_logprobs=[[-1.0], [-2.0, -2.0], [-3.0] * 3, [-4.0], [-5.0] * 2],
        keep=[True, False, True, True, False],
        teacher_logits_BCV=logits,
        origin=[2, 0, 0, 1, 2],  # the order a mixed source returns: teacher rows first
    )
    first, second = joined.split([1, 2])
    assert first.rows == [3, 3] and first.origin == [0, 0] and first.ids == [[2, 2], [3, 3, 3]]
    assert first.keep == [False, True] and first.hit_cap == [True, False]
    assert second.rows == [7, 9, 7] and second.origin == [1, 0, 1] and second.keep == [True, True, False]
    assert second.sampler_logprobs == [[-1.0], [-4.0], [-5.0, -5.0]]
    assert torch.equal(first.teacher_logits_BCV, logits[[1, 2], :3])  # cut to the slice's longest row
    assert torch.equal(second.teacher_logits_BCV, logits[[0, 3, 4], :2])


@pytest.fixture(scope="module")
def engine_and_prompts():
    from selfdistill.models import load_model

    model, tok = load_model("tiny-random")
    model.eval()
    return make_engine("hf", model, tok), [tok(t)["input_ids"] for t in TEXTS]


@pytest.mark.parametrize("generations", [1, 2])
def test_one_call_for_the_step_samples_what_one_call_per_micro_batch_does(engine_and_prompts, generations):
    engine, prompts = engine_and_prompts
    spec = Sampling(temperature=1.0, top_p=1.0, num_generations=generations, max_new_tokens=8)
    source = sampled(engine, prompts, spec)
    idx = [[5, 0], [2, 3], [1, 4]]  # prompts of unequal lengths in each call: left padding differs when grouped
    micro = [(rows, [seed_for(3, m, j) for j in range(len(rows))]) for m, rows in enumerate(idx)]
    shared = step_completions(source, micro, 0, {}, None)
    alone = step_completions(source, micro, 0, {}, 2)
    expected_rows = [[i for i in rows for _ in range(generations)] for rows in idx]
    assert [c.rows for c in shared] == [c.rows for c in alone] == expected_rows
    assert [c.ids for c in shared] == [c.ids for c in alone]
    for a, b in zip(shared, alone, strict=True):
        for x, y in zip(a.sampler_logprobs, b.sampler_logprobs, strict=True):
            assert x == pytest.approx(y, abs=1e-5)


def test_the_warm_start_draws_its_teacher_rows_over_the_whole_generation(engine_and_prompts):
    """Which rows the teacher samples is drawn per call, so over the whole step when grouped (the share exact to one
    row over all of its rows): the one part of a step that grouping changes, by design, not by arithmetic."""
    engine, prompts = engine_and_prompts
    spec = Sampling(temperature=1.0, top_p=1.0, num_generations=1, max_new_tokens=6)
    teacher = sampled(engine, [p + p[-1:] for p in prompts], spec)
    source = mixed(teacher, sampled(engine, prompts, spec), 0.5, None, seed=0, total_steps=4)
    micro = [([0, 1, 2], [1, 2, 3]), ([3, 4, 5], [4, 5, 6])]
    stats: dict[str, list[float]] = {}
    batches = step_completions(source, micro, 0, stats, None)
    assert stats["teacher_rows"] == [0.5]  # one draw for the step: 3 of its 6 rows
    for batch, (idx, _) in zip(batches, micro, strict=True):
        assert sorted(batch.rows) == sorted(idx)  # every row back in its own micro-batch, once
        assert sorted(batch.origin) == list(range(len(idx)))
        assert all(idx[o] == row for o, row in zip(batch.origin, batch.rows, strict=True))


def _run(data: Path, out: Path, **options) -> tuple[list[dict], dict[str, torch.Tensor]]:
    cfg = TrainConfig.from_mapping(
        {"data": str(data), "output": out, **FAST, "max_steps": 2, "grad_accum": 3, "save_every": 0} | options
    )
    train(cfg)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return lines, load_file(out / "model.safetensors")


@pytest.mark.parametrize(
    "options",
    [
        {"method": "sdft"},
        {"method": "sdft", "num_generations": 2},
        {"method": "seqkd"},
        {"method": "sft", "anchor": "general_chat", "anchor_batch_size": 2},
    ],
    ids=["sdft", "sdft-2-generations", "seqkd", "sft+anchor"],
)
def test_training_on_one_generation_per_step_matches_one_per_micro_batch(small_jsonl, tmp_path, options):
    shared, shared_weights = _run(small_jsonl, tmp_path / "shared", **options)
    alone, alone_weights = _run(small_jsonl, tmp_path / "alone", generation_batch_size=2, **options)
    for a, b in zip(shared, alone, strict=True):
        assert a["completion_length"] == b["completion_length"]  # the same samples, so the same lengths
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    for name, tensor in shared_weights.items():
        torch.testing.assert_close(tensor, alone_weights[name], rtol=1e-4, atol=1e-6)


def test_a_generation_batch_below_one_prompt_is_refused():
    with pytest.raises(ConfigError, match="generation-batch-size"):
        TrainConfig.from_mapping({"data": "x.jsonl", "generation_batch_size": 0})


def test_a_resume_mid_run_samples_and_trains_as_the_run_that_never_stopped(small_jsonl, tmp_path):
    options = {"method": "sdft", "max_steps": 4, "save_every": 2, "grad_accum": 2, "resume": True}
    whole, whole_weights = _run(small_jsonl, tmp_path / "whole", **options)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    shutil.rmtree(cut / "checkpoints" / "step-000004")
    (cut / "model.safetensors").unlink()
    resumed, resumed_weights = _run(small_jsonl, cut, **options)

    def timeless(lines: list[dict]) -> list[dict]:
        return [{k: v for k, v in line.items() if not k.startswith("seconds")} for line in lines]

    assert timeless(resumed) == timeless(whole)
    assert all(torch.equal(tensor, resumed_weights[name]) for name, tensor in whole_weights.items())
