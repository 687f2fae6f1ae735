"""Packing puts completion token t at the same column for every row; sampling respects EOS and caps."""

from __future__ import annotations

import torch

from selfdistill.rollout import completion_logits, cut_at_eos, pack, sample


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
