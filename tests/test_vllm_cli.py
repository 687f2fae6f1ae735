"""Training, evaluation and the probe with --rollout vllm, end to end on the tiny random model (vLLM's CPU build;
skipped where vLLM is not installed, run in .venv-vllm by `make test`)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from selfdistill.cli import main

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]
TRAIN = [
    "--model",
    "tiny-random",
    "--rollout",
    "vllm",
    "--max-steps",
    "2",
    "--batch-size",
    "2",
    "--max-new-tokens",
    "8",
    "--no-progress",
    "--lr",
    "1e-3",
]
TIS_KEYS = {"tis_ratio_mean", "tis_ratio_min", "tis_ratio_max", "tis_logprob_gap", "tis_weight_mean"}


@pytest.mark.parametrize(
    "extra",
    [["--method", "sdft"], ["--method", "sdft", "--lora"], ["--method", "seqkd"]],
    ids=["sdft", "sdft-lora", "seqkd"],
)
def test_train_with_vllm_rollouts_logs_tis_and_syncs_every_step(tmp_path, small_jsonl, extra):
    out = tmp_path / "out"
    assert main(["train", "--data", str(small_jsonl), "--output", str(out), *TRAIN, *extra]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r.keys() >= TIS_KEYS and math.isfinite(r["loss"]) and r["seconds_sync"] > 0
        # fp32 vLLM against the fp32 trainer: the samplers agree, so the weights are ~1 (a stale or wrong
        # sync would show here as log-prob gaps of whole nats)
        assert r["tis_logprob_gap"] < 1e-3 and abs(r["tis_weight_mean"] - 1) < 1e-2


def test_eval_with_vllm_gives_hf_greedy_predictions(tmp_path):
    args = ["eval", "--model", "tiny-random", "--tasks", "record_json", "--limit", "4"]
    assert main([*args, "--output", str(tmp_path / "hf.json")]) == 0
    assert main([*args, "--rollout", "vllm", "--output", str(tmp_path / "vllm.json")]) == 0

    def predictions(name):
        lines = (tmp_path / f"{name}.predictions.jsonl").read_text().splitlines()
        return [json.loads(line)["prediction"] for line in lines]

    assert predictions("vllm") == predictions("hf") and len(predictions("hf")) == 4


def test_a_model_vllm_cannot_run_is_one_line_and_exit_2(tmp_path, small_jsonl, capsys):
    """Head size 16 has no vLLM CPU attention kernel: refused at start-up, before any training step."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfdistill.models import load_tokenizer

    tok = load_tokenizer("tiny-random")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "odd")
    tok.save_pretrained(tmp_path / "odd")
    args = [a if a != "tiny-random" else str(tmp_path / "odd") for a in TRAIN]
    code = main(["train", "--data", str(small_jsonl), "--output", str(tmp_path / "out"), *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("selfdistill: error")]
    assert code == 2 and len(err) == 1 and "rollout: vllm cannot run this model" in err[0] and "head size 16" in err[0]
    assert not (tmp_path / "out").exists()
