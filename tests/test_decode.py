"""The decode engine against the hf engine (``model.generate``) on tiny random Llama, Qwen2 and Qwen3 models in fp32:
the same greedy tokens, the same seeded samples with the same log-probs, the engine contract (versions, sync), and a
fallback to hf, with one log line, for what it does not run."""

from __future__ import annotations

import logging

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

from selfdistill.models import load_model
from selfdistill.training.engines import Sampling, StaleWeightsError, decoder, make_engine
from selfdistill.training.engines.decode import DecodeEngine, decode
from selfdistill.training.engines.hf import HFEngine
from selfdistill.training.rollout import left_pad

TEXTS = ["Hello there friend", "What is two plus", "The capital of France is a city that", "Hi"]
SEEDS = [11, 12, 13, 14]


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model("tiny-random")
    return model.eval(), tok


def _prompts(tok) -> list[list[int]]:
    return [tok(t)["input_ids"] for t in TEXTS]  # unequal lengths: left padding is exercised


def _tiny(config_cls, tok, **extra) -> torch.nn.Module:
    config = config_cls(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random biases and norm gains, so a bias or a gain the engine dropped would show
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def _both(model, tok, spec: Sampling, seeds=SEEDS):
    prompts = _prompts(tok)
    expected = HFEngine(model, tok).generate(prompts, spec, seeds=seeds)
    got = make_engine("decode", model, tok).generate(prompts, spec, seeds=seeds)
    return expected, got


def _assert_same(expected, got, logprobs: bool = True) -> None:
    assert got.completions == expected.completions
    assert got.hit_cap == expected.hit_cap and got.prompt_index == expected.prompt_index
    if logprobs:
        for e, g in zip(expected.sample_logprobs, got.sample_logprobs, strict=True):
            torch.testing.assert_close(torch.tensor(g), torch.tensor(e), rtol=0, atol=1e-4)


def test_greedy_equals_generate(tiny):
    model, tok = tiny
    expected, got = _both(model, tok, Sampling(max_new_tokens=24, greedy=True))
    assert any(len(c) > 5 for c in expected.completions)
    _assert_same(expected, got)


def test_seeded_samples_equal_the_hf_engine_with_the_same_seeds(tiny):
    model, tok = tiny
    spec = Sampling(max_new_tokens=16, temperature=0.8, top_p=0.9, num_generations=2)
    expected, got = _both(model, tok, spec)
    assert len({tuple(c) for c in got.completions}) > 4, "the rows must differ, or this test proves little"
    _assert_same(expected, got)
    other = make_engine("decode", model, tok).generate(_prompts(tok), spec, seeds=[s + 1 for s in SEEDS])
    assert other.completions != got.completions


def test_min_new_tokens_blocks_the_end_of_turn_as_hf_does(tiny):
    model, tok = tiny
    spec = Sampling(max_new_tokens=12, min_new_tokens=12, logprobs=False)
    expected, got = _both(model, tok, spec)
    assert all(len(c) == 12 for c in got.completions) and all(got.hit_cap)
    _assert_same(expected, got, logprobs=False)


@pytest.mark.parametrize(
    ("config_cls", "extra"),
    [(LlamaConfig, {"tie_word_embeddings": False}), (Qwen2Config, {}), (Qwen3Config, {"head_dim": 16})],
    ids=["llama-untied", "qwen2-qkv-bias", "qwen3-qk-norm"],
)
def test_other_families_greedy_and_sampled(tiny, config_cls, extra):
    _, tok = tiny
    model = _tiny(config_cls, tok, **extra)
    assert decoder.unsupported(model) is None
    _assert_same(*_both(model, tok, Sampling(max_new_tokens=12, greedy=True)))
    _assert_same(*_both(model, tok, Sampling(max_new_tokens=12, temperature=1.0)))


def test_lora_samples_the_effective_weights(tiny):
    _, tok = tiny
    model, _ = load_model("tiny-random")
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(model, config).eval()
    engine = make_engine("decode", model, tok)
    assert isinstance(engine, DecodeEngine)
    _assert_same(*_both(model, tok, Sampling(max_new_tokens=12, greedy=True)))


@torch.no_grad()
def test_forward_logits_equal_the_model_in_fp32_and_near_it_under_bf16_autocast(tiny):
    model, tok = tiny
    ids_BP, mask_BP = left_pad(_prompts(tok), tok.pad_token_id)
    positions_BP = (mask_BP.cumsum(-1) - 1).clamp(min=0)
    for bf16, atol in ((False, 1e-4), (True, 0.05)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            expected_BV = model(input_ids=ids_BP, attention_mask=mask_BP, position_ids=positions_BP).logits[:, -1]
            w = decoder.gather(model, rows=len(ids_BP), prepack="off")
            cache = decoder.KVCache.empty(w, len(ids_BP), ids_BP.shape[1], w.dtype)
            rope = decoder.rope_table(w, ids_BP.shape[1], w.embed.dtype)
            got_BV = decoder.forward(w, cache, rope, ids_BP, positions_BP, mask_BP.bool(), at=0)
        assert w.dtype == (torch.bfloat16 if bf16 else torch.float32)
        torch.testing.assert_close(got_BV.float(), expected_BV.float(), rtol=0, atol=atol)


def test_contract_versions_and_sync(tiny):
    model, tok = tiny
    engine = make_engine("decode", model, tok, version=3)
    assert engine.name == "decode" and engine.version == 3
    with pytest.raises(StaleWeightsError, match="step 3"):
        engine.generate(_prompts(tok), Sampling(max_new_tokens=2), version=4)
    with pytest.raises(ValueError, match="another"):
        engine.sync_weights(torch.nn.Linear(1, 1), 4)
    engine.sync_weights(model, 4)
    assert len(engine.generate(_prompts(tok), Sampling(max_new_tokens=2), version=4).completions) == 4


def test_an_unsupported_model_falls_back_to_hf_with_one_log_line(tiny, caplog):
    _, tok = tiny
    model = _tiny(LlamaConfig, tok, hidden_act="gelu")
    with caplog.at_level(logging.INFO, logger="selfdistill.training.engines.decode"):
        engine = make_engine("decode", model, tok)
    assert engine.name == "hf"
    assert [r.getMessage() for r in caplog.records] == [
        "rollout: the decode engine does not run an MLP with gelu activation or biases; sampling with hf instead"
    ]


@torch.no_grad()
def test_the_static_step_a_cuda_graph_would_capture_decodes_the_same_tokens(tiny):
    """Whole-cache attention with the write column a tensor (fixed shapes, no host reads) against the sliced CPU
    step: the same greedy tokens. No GPU here, so the capture itself is not run."""
    model, tok = tiny
    ids_BP, mask_BP = left_pad(_prompts(tok), tok.pad_token_id)
    spec = Sampling(max_new_tokens=16, greedy=True)
    w = decoder.gather(model, rows=len(ids_BP), prepack="off")
    sliced_BC, _ = decode(w, ids_BP, mask_BP, spec, None, [tok.eos_token_id], tok.pad_token_id)
    static_BC, _ = decode(w, ids_BP, mask_BP, spec, None, [tok.eos_token_id], tok.pad_token_id, static=True)
    assert sliced_BC.shape[1] > 4
    assert torch.equal(static_BC, sliced_BC)
