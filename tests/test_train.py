"""2-step runs of every method on tiny-random, the teacher modes, LoRA, and one CLI run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from selfdistill.cli import main
from selfdistill.config import TrainConfig
from selfdistill.models import load_model
from selfdistill.training.loop import batch_order, train

FAST = {"model": "tiny-random", "batch_size": 2, "max_new_tokens": 8, "progress": False, "lr": 1e-3}


def _run(tmp_path: Path, data: Path, name: str, **overrides) -> Path:
    cfg = TrainConfig.from_mapping({"data": str(data), "output": tmp_path / name, **FAST, **overrides})
    return train(cfg)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["sdft", "sft", "seqkd"])
def test_two_steps_each_method(tmp_path, small_jsonl, method):
    out = _run(tmp_path, small_jsonl, method, method=method, max_steps=2)
    records = _metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert math.isfinite(r["loss"]) and r["loss"] >= 0
        assert math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0
        assert r["seconds_per_step"] > 0
        phases = {"rollout", "student", "optimizer", "ema", "diagnostics"} | (
            {"teacher"} if method == "sdft" else set()
        )
        phases |= {"sync"} if method != "sft" else set()  # the engine is handed the weights after every step
        assert {k.removeprefix("seconds_") for k in r if k.startswith("seconds_")} == phases | {"per_step"}
        assert sum(r[f"seconds_{p}"] for p in phases) <= r["seconds_per_step"] + 1e-6
    if method == "sdft":
        assert all(math.isfinite(r["kl"]) and r["kl"] >= 0 for r in records)
        assert all("student_entropy" in r and "teacher_minus_student_logprob" in r for r in records)
    config = json.loads((out / "config.json").read_text())["selfdistill"]
    assert config["method"] == method and config["max_steps"] == 2
    assert json.loads((out / "train_config.json").read_text()) == config
    trained = AutoModelForCausalLM.from_pretrained(out)
    base, _ = load_model("tiny-random")
    moved = [not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters(), strict=True)]
    assert all(moved), "every student weight should move after two AdamW steps"


def test_ema_teacher_moves_by_the_rate(tmp_path, small_jsonl):
    rate = 0.25
    out = _run(tmp_path, small_jsonl, "ema", max_steps=2, save_every=1, ema_rate=rate)
    first, second = sorted((out / "checkpoints").iterdir())
    phi1, phi2 = (load_file(c / "teacher.safetensors") for c in (first, second))
    theta1, theta2 = (load_file(c / "trainable.safetensors") for c in (first, second))
    base = load_model("tiny-random")[0].state_dict()
    for name, value in phi2.items():
        # step 1 starts from φ0 = θ0, so φ1 = (1-α)θ0 + αθ1 and φ2 = (1-α)φ1 + αθ2
        assert torch.allclose(phi1[name], (1 - rate) * base[name] + rate * theta1[name], atol=1e-6)
        assert torch.allclose(value, (1 - rate) * phi1[name] + rate * theta2[name], atol=1e-6)
        assert not torch.equal(value, base[name])


def test_frozen_teacher_stays_at_start(tmp_path, small_jsonl):
    out = _run(tmp_path, small_jsonl, "frozen", max_steps=2, teacher="frozen")
    (ckpt,) = (out / "checkpoints").iterdir()
    phi = load_file(ckpt / "teacher.safetensors")
    base = load_model("tiny-random")[0].state_dict()
    assert all(torch.equal(v, base[k]) for k, v in phi.items())


def test_lora_adapter_and_merge(tmp_path, small_jsonl):
    out = _run(tmp_path, small_jsonl, "lora", max_steps=2, lora=True, lora_r=4, merge=True)
    assert (out / "adapter_config.json").is_file()
    adapted, _ = load_model(str(out))
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-4)


def test_batch_order_covers_every_example_each_epoch():
    n, bs = 7, 3
    for epoch in range(3):
        seen = [i for b in range(epoch * 3, epoch * 3 + 3) for i in batch_order(n, bs, seed=1, batch_index=b)]
        assert sorted(seen) == list(range(n))
    assert batch_order(n, bs, 1, 0) == batch_order(n, bs, 1, 0)
    assert batch_order(n, bs, 1, 0) != batch_order(n, bs, 2, 0) or batch_order(n, bs, 1, 1) != batch_order(n, bs, 2, 1)


def test_cli_train_end_to_end(tmp_path, small_jsonl, capsys):
    out = tmp_path / "cli_run"
    args = ["train", "--method", "sdft", "--model", "tiny-random", "--data", str(small_jsonl)]
    args += ["--max-steps", "2", "--output", str(out), "--batch-size", "2", "--max-new-tokens", "8"]
    assert main(args) == 0
    assert (out / "config.json").is_file()
    assert len(_metrics(out)) == 2
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    # The same output again without --overwrite is refused, and the run is left as it was.
    before = (out / "metrics.jsonl").read_text()
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    ("lora", "anchor"), [(False, None), (True, None), (False, "general_chat"), (True, "general_chat")]
)
def test_the_lm_head_inside_the_loss_trains_as_the_materialized_logits_do(
    tmp_path, small_jsonl, lora, anchor, monkeypatch
):
    """--fused-head (the default) against --no-fused-head: same losses, diagnostics and final weights in fp32, with
    the replay anchor's term (its reference: a frozen copy, or the LoRA base) computed the same way."""
    from selfdistill.training import losses

    calls = []
    head_forward_kl = losses.head_forward_kl
    monkeypatch.setattr(losses, "head_forward_kl", lambda *a, **k: calls.append(1) or head_forward_kl(*a, **k))
    runs = {}
    for fused in (True, False):
        calls.clear()
        out = _run(
            tmp_path,
            small_jsonl,
            f"fused{fused}",
            max_steps=3,
            precision="fp32",
            fused_head=fused,
            lora=lora,
            anchor=anchor,
            anchor_batch_size=2,
        )
        # the head ran inside the loss on every step (twice with the anchor), or never
        assert len(calls) == ((6 if anchor else 3) if fused else 0)
        runs[fused] = (_metrics(out), load_file(out / ("adapter_model.safetensors" if lora else "model.safetensors")))
    (fused_records, fused_weights), (plain_records, plain_weights) = runs[True], runs[False]
    for a, b in zip(fused_records, plain_records, strict=True):
        for key in ("loss", "kl", "teacher_minus_student_logprob", "student_entropy", "grad_norm") + (
            ("anchor_kl",) if anchor else ()
        ):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert fused_weights.keys() == plain_weights.keys()
    for name in fused_weights:  # AdamW divides by sqrt(v) + 1e-8: where a gradient is that small, last-bit
        # differences of the two summation orders become update differences of a few 1e-5 (lr 1e-3, 3 steps)
        torch.testing.assert_close(fused_weights[name], plain_weights[name], rtol=1e-4, atol=5e-5)


def test_a_teacher_temperature_trains_the_same_with_the_head_inside_the_loss_or_not(tmp_path, small_jsonl):
    """--teacher-temperature reaches both loss paths alike, and it changes the training (against τ = 1)."""
    runs = {}
    for name, options in {"fused": {}, "plain": {"fused_head": False}, "tau1": {"teacher_temperature": 1.0}}.items():
        tau = options.pop("teacher_temperature", 0.5)
        out = _run(
            tmp_path, small_jsonl, f"tau-{name}", max_steps=3, precision="fp32", teacher_temperature=tau, **options
        )
        runs[name] = _metrics(out)
    for a, b in zip(runs["fused"], runs["plain"], strict=True):
        for key in ("loss", "kl", "teacher_minus_student_logprob", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert runs["fused"][0]["loss"] != pytest.approx(runs["tau1"][0]["loss"], rel=1e-3)
    assert json.loads((tmp_path / "tau-fused" / "train_config.json").read_text())["teacher_temperature"] == 0.5


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_recomputes_the_same_step(tmp_path, small_jsonl, lora, monkeypatch):
    """--gradient-checkpointing changes memory, not the step: same losses and gradient norms in fp32, with each
    decoder layer run again in the backward pass."""
    from transformers import modeling_utils

    calls = []
    checkpoint = modeling_utils.checkpoint
    monkeypatch.setattr(modeling_utils, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    records, layer_calls = {}, {}
    for on in (True, False):
        calls.clear()
        out = _run(
            tmp_path, small_jsonl, f"ckpt{on}", max_steps=2, precision="fp32", gradient_checkpointing=on, lora=lora
        )
        records[on], layer_calls[on] = _metrics(out), len(calls)
    assert layer_calls[True] > 0 and layer_calls[False] == 0  # the layers ran under checkpointing, or none did
    for a, b in zip(records[True], records[False], strict=True):
        for key in ("loss", "grad_norm", "completion_length"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
