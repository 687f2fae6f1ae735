"""Truncated importance sampling on hand-computed numbers: prefix and sequence modes, the cap, masks and NaNs."""

from __future__ import annotations

import math

import pytest
import torch

from selfdistill.training.correction import tis_stats, tis_weights, token_logprobs

LN2 = math.log(2.0)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_prefix_weight_is_the_capped_product_of_the_ratios_before_each_token():
    # Δ = [ln 1.5, ln 0.5, ln 4, ln 1]: prefix products 1, 1.5, 0.75, 3 -> capped at 2
    delta = [math.log(1.5), math.log(0.5), math.log(4.0), 0.0]
    trainer, sampler = _t([delta]), _t([[0.0] * 4])
    w = tis_weights(trainer, sampler, torch.ones(1, 4), "prefix", cap=2.0)
    torch.testing.assert_close(w, _t([[1.0, 1.5, 0.75, 2.0]]))


def test_sequence_weight_is_the_row_mean_of_capped_token_ratios():
    # ratios 1.5, 0.5, 4 (capped to 2), 1 -> mean 1.25 for every token of the row; row 2 has a masked tail
    trainer = _t([[math.log(1.5), math.log(0.5), math.log(4.0), 0.0], [LN2, -LN2, 5.0, 5.0]])
    sampler = torch.zeros(2, 4)
    mask = _t([[1, 1, 1, 1], [1, 1, 0, 0]])
    w = tis_weights(trainer, sampler, mask, "sequence", cap=2.0)
    torch.testing.assert_close(w, _t([[1.25] * 4, [1.25, 1.25, 0.0, 0.0]]))


def test_none_is_the_mask_and_equal_logprobs_give_weight_one():
    lp = _t([[-1.0, -2.0, -0.5]])
    mask = _t([[1, 1, 0]])
    for mode in ("none", "prefix", "sequence"):
        torch.testing.assert_close(tis_weights(lp, lp, mask, mode), mask)


def test_nan_inf_and_masked_positions_never_reach_the_weights():
    trainer = _t([[float("nan"), LN2, float("-inf"), 100.0]])
    sampler = _t([[0.0, 0.0, 0.0, float("nan")]])
    mask = _t([[1, 1, 1, 0]])
    for mode in ("prefix", "sequence"):
        w = tis_weights(trainer, sampler, mask, mode, cap=2.0)
        assert torch.isfinite(w).all() and w[0, 3] == 0
    # prefix: Δ = [0 (nan), ln 2, 0 (-inf)] -> weights 1, 1, 2
    torch.testing.assert_close(tis_weights(trainer, sampler, mask, "prefix"), _t([[1.0, 1.0, 2.0, 0.0]]))


def test_huge_log_ratios_are_clamped_before_exp():
    trainer, sampler = _t([[500.0, 500.0, 0.0]]), torch.zeros(1, 3)
    w = tis_weights(trainer, sampler, torch.ones(1, 3), "prefix", cap=1e30)
    assert torch.isfinite(w).all() and w[0, 2] == pytest.approx(math.exp(20.0), rel=1e-5)


def test_bad_mode_and_cap_are_refused():
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="mode"):
        tis_weights(z, z, torch.ones(1, 2), "token")
    with pytest.raises(ValueError, match="cap"):
        tis_weights(z, z, torch.ones(1, 2), "prefix", cap=0)


def test_stats_report_ratios_over_masked_tokens():
    trainer, sampler = _t([[LN2, -LN2, 9.0]]), torch.zeros(1, 3)
    mask = _t([[1, 1, 0]])
    stats = tis_stats(trainer, sampler, mask, tis_weights(trainer, sampler, mask, "prefix"))
    assert stats["tis_ratio_min"] == pytest.approx(0.5) and stats["tis_ratio_max"] == pytest.approx(2.0)
    assert stats["tis_ratio_mean"] == pytest.approx(1.25) and stats["tis_logprob_gap"] == pytest.approx(LN2)
    assert stats["tis_weight_mean"] == pytest.approx(1.5)  # prefix weights 1, 2


def test_token_logprobs_match_log_softmax_at_temperature_in_chunks():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen).to(torch.bfloat16)
    ids = torch.randint(0, 11, (2, 5), generator=gen)
    expected = torch.log_softmax(logits.float() / 0.7, -1).gather(-1, ids[..., None]).squeeze(-1)
    got = token_logprobs(logits, ids, temperature=0.7, chunk_size=2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
