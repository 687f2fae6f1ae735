"""The rollout-engine contract, for every engine in ENGINES (vLLM cases run where vLLM is installed: `make test`
runs them in .venv-vllm): greedy output equals HF greedy decoding on the same weights, and after an optimizer step
and a sync the engine follows the new weights (tied LM head and LoRA effective weights included), with sampler
log-probs equal to the trainer's; a stale engine refuses to sample."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from peft import LoraConfig, get_peft_model

from selfdistill.evaluation.evaluate import generate
from selfdistill.models import load_model
from selfdistill.training.correction import token_logprobs
from selfdistill.training.engines import Sampling, StaleWeightsError, make_engine
from selfdistill.training.engines.weights import hf_weights
from selfdistill.training.rollout import completion_logits, pack

HAS_VLLM = importlib.util.find_spec("vllm") is not None
ENGINE_NAMES = [
    "hf",
    "decode",
    pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")]),
]
PROMPTS_TEXT = ["Hello there friend", "What is two plus", "The capital of France is"]
NEW = 10


def _prompts(tok):
    return [tok(t)["input_ids"] for t in PROMPTS_TEXT]


def _greedy(engine, prompts, version=None):
    return engine.generate(prompts, Sampling(max_new_tokens=NEW, greedy=True), version=version)


def _hf_greedy(model, tok, prompts) -> list[list[int]]:
    texts = generate(model, tok, prompts, NEW, progress=False)
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _decoded(tok, rollout) -> list[str]:
    return [tok.decode(c, skip_special_tokens=True) for c in rollout.completions]


def _sft_step(model, tok, lr: float = 0.05) -> None:
    """One real AdamW step (NLL of a fixed sentence) on the trainable weights."""
    ids = torch.tensor([tok("Paris is the capital of France. Paris Paris Paris.")["input_ids"]])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    model.eval()


def _check_logprobs_match_trainer(model, tok, engine, prompts, version) -> None:
    ro = engine.generate(prompts, Sampling(max_new_tokens=NEW, temperature=1.0), version=version)
    batch = pack([prompts[i] for i in ro.prompt_index], ro.completions, tok.pad_token_id)
    with torch.no_grad():
        trainer_BC = token_logprobs(completion_logits(model, batch), batch.completion_ids_BC)
    for row, sampled in enumerate(ro.sample_logprobs):
        torch.testing.assert_close(trainer_BC[row, : len(sampled)], torch.tensor(sampled), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_greedy_equals_hf_and_follows_an_optimizer_step_after_sync(name):
    model, tok = load_model("tiny-random")
    model.eval()
    prompts = _prompts(tok)
    engine = make_engine(name, model, tok)
    try:
        before = _greedy(engine, prompts)
        assert _decoded(tok, before) == generate(model, tok, prompts, NEW, progress=False)
        _sft_step(model, tok)
        expected = generate(model, tok, prompts, NEW, progress=False)
        assert _decoded(tok, before) != expected, "the step must change greedy output, or this test proves nothing"
        with pytest.raises(StaleWeightsError, match="step 0"):
            _greedy(engine, prompts, version=1)
        engine.sync_weights(model, 1)
        assert engine.version == 1
        assert _decoded(tok, _greedy(engine, prompts, version=1)) == expected
        _check_logprobs_match_trainer(model, tok, engine, prompts, version=1)
    finally:
        engine.close()


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_lora_engine_samples_the_effective_weights_and_follows_them(name):
    model, tok = load_model("tiny-random")
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(model, config).eval()
    prompts = _prompts(tok)
    engine = make_engine(name, model, tok)
    try:
        assert _decoded(tok, _greedy(engine, prompts)) == generate(model, tok, prompts, NEW, progress=False)
        _sft_step(model, tok, lr=0.1)
        engine.sync_weights(model, 1)
        assert _decoded(tok, _greedy(engine, prompts, version=1)) == generate(model, tok, prompts, NEW, progress=False)
        _check_logprobs_match_trainer(model, tok, engine, prompts, version=1)
    finally:
        engine.close()


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_seeded_samples_are_a_function_of_the_seed_not_of_the_batch(name):
    """What makes rollouts independent of the rank count: rows split over two calls, in another order, sample what
    they sample together; the same seeds repeat a rollout and other seeds change it."""
    model, tok = load_model("tiny-random")
    model.eval()
    prompts = _prompts(tok)
    seeds = [7, 8, 9]
    spec = Sampling(max_new_tokens=NEW, num_generations=2, logprobs=False)
    engine = make_engine(name, model, tok)
    try:
        whole = engine.generate(prompts, spec, seeds=seeds)
        assert whole.prompt_index == [0, 0, 1, 1, 2, 2]
        last = engine.generate(prompts[2:], spec, seeds=seeds[2:]).completions
        first = engine.generate(prompts[1::-1], spec, seeds=seeds[1::-1]).completions
        assert whole.completions == first[2:] + first[:2] + last
        assert engine.generate(prompts, spec, seeds=seeds).completions == whole.completions
        assert engine.generate(prompts, spec, seeds=[s + 3 for s in seeds]).completions != whole.completions
    finally:
        engine.close()


def test_hf_engine_refuses_to_sync_another_model():
    model, tok = load_model("tiny-random")
    engine = make_engine("hf", model, tok)
    with pytest.raises(ValueError, match="another"):
        engine.sync_weights(load_model("tiny-random")[0], 1)


def test_hf_weights_names_a_checkpoint_would_use_without_the_tied_head():
    model, _ = load_model("tiny-random")
    names = [name for name, _ in hf_weights(model)]
    assert names == [n for n in model.state_dict() if n != "lm_head.weight"]
    assert "lm_head.weight" in dict(hf_weights(model, tied_head=True))


def test_hf_weights_of_lora_are_the_merged_weights_and_leave_the_adapters_alone():
    model, _ = load_model("tiny-random")
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "o_proj"],
        init_lora_weights=False,
        modules_to_save=["embed_tokens"],
    )
    peft_model = get_peft_model(model, config)
    got = dict(hf_weights(peft_model))
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    reference.pop("lm_head.weight", None)
    assert list(got) == list(reference)
    for name, tensor in reference.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n)  # still a peft model
