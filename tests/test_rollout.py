"""Packing puts completion token t at the same column for every row; sampling respects EOS and caps."""

from __future__ import annotations

import torch

from selfdistill.training.rollout import (
    completion_hidden,
    completion_logits,
    cut_at_eos,
    head_is_separable,
    pack,
    sample,
)


def test_pack_alignment_and_positions():
    packed = pack([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert packed.prompt_width == 3
    assert packed.input_ids_BL.tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert packed.attention_mask_BL.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert packed.position_ids_BL[1, 2:].tolist() == [0, 1, 2, 3]
    assert packed.completion_mask_BC.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_completion_logits_match_unpadded(tiny):
    model, _ = tiny
    prompts, completions = [[10, 11, 12, 13], [20]], [[30, 31], [40, 41, 42]]
    packed = pack(prompts, completions, pad_id=0)
    with torch.no_grad():
        batched = completion_logits(model, packed)
        for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            alone = model(torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) + len(c) - 1]
            assert torch.allclose(batched[row, : len(c)], alone, atol=1e-4)


def test_cut_at_eos():
    assert cut_at_eos([4, 2, 7], {2}) == ([4, 2], False)
    assert cut_at_eos([4, 5], {2}) == ([4, 5], True)


def test_sample_shapes_and_logprobs(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    ro = sample(model, tok, [[1, 2, 3], [4, 5]], max_new_tokens=6, num_generations=2)
    assert ro.prompt_index == [0, 0, 1, 1]
    for comp, lps, capped in zip(ro.completions, ro.sample_logprobs, ro.hit_cap, strict=True):
        assert 1 <= len(comp) <= 6 and len(lps) == len(comp)
        assert all(lp <= 0 for lp in lps)
        assert capped == (tok.eos_token_id not in comp)


def test_seeded_rows_do_not_depend_on_the_rest_of_the_batch(tiny):
    """The property data parallel relies on: a row's sample is a function of its seed and prompt, so 1 x 6 rows and
    2 + 4 rows (other padding, other order) give the same completions; another seed gives others."""
    model, tok = tiny
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11], [12, 13], [14, 15, 16, 17]]
    seeds = [101, 102, 103, 104, 105, 106]
    kw = {"max_new_tokens": 8, "num_generations": 2, "logprobs": False}
    whole = sample(model, tok, prompts, seeds=seeds, **kw).completions
    first = sample(model, tok, prompts[:2], seeds=seeds[:2], **kw).completions
    rest = sample(model, tok, prompts[:1:-1], seeds=seeds[:1:-1], **kw).completions  # prompts 5..2, reversed
    rest = [rest[2 * i + j] for i in reversed(range(4)) for j in range(2)]
    assert whole == first + rest
    assert whole[0] != whole[1], "the two generations of a prompt have their own streams"
    assert sample(model, tok, prompts, seeds=[s + 1 for s in seeds], **kw).completions != whole


def test_seeded_sampler_draws_from_the_softmax_at_temperature_within_top_p():
    from selfdistill.training.rollout import SeededSampler

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -3.0])
    rows, temperature = 6000, 0.7
    scores = SeededSampler(range(rows), temperature, 1.0, torch.device("cpu"))(None, logits.expand(rows, -1))
    freq = torch.bincount(scores.argmax(-1), minlength=5) / rows
    torch.testing.assert_close(freq, torch.softmax(logits / temperature, -1), atol=0.025, rtol=0)
    # top-p 0.8 keeps the smallest set reaching 0.8 of the mass (tokens 0 and 1 here), renormalised
    probs = torch.softmax(logits / temperature, -1)
    scores = SeededSampler(range(rows), temperature, 0.8, torch.device("cpu"))(None, logits.expand(rows, -1))
    freq = torch.bincount(scores.argmax(-1), minlength=5) / rows
    kept = torch.tensor([probs[0], probs[1], 0, 0, 0]) / (probs[0] + probs[1])
    torch.testing.assert_close(freq, kept, atol=0.025, rtol=0)


def test_the_head_is_separable_only_where_the_logits_are_a_plain_linear_head_of_the_hidden_states(tiny):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    llama, _ = tiny
    packed = pack([[3, 4, 5], [6, 7]], [[8, 9], [10]], pad_id=0)
    assert head_is_separable(llama, packed)
    assert completion_hidden(llama, packed).shape == (2, 2, llama.config.hidden_size)
    small = {
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
    }
    capped = Gemma2ForCausalLM(Gemma2Config(**small, final_logit_softcapping=2.0))
    assert not head_is_separable(capped, packed)  # tanh soft-capping after the head
    capped.config.final_logit_softcapping = None
    assert head_is_separable(capped, packed)
