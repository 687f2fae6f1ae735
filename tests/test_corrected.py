"""Teacher-corrected sampling: kept tokens are in the teacher's top-k, the rest come from the teacher, and the
teacher logits handed back are the ones a full forward pass would give."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from selfdistill.models import tiny_random_model
from selfdistill.training.corrected import CACHE_KEY, _nucleus, corrected_sample
from selfdistill.training.rollout import completion_logits, pack, sample

V, PAD, EOS = 16, 0, 15
TOK = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS)


class TableLM(torch.nn.Module):
    """Next-token logits that depend only on n, the number of tokens read: favourites(n)[j] gets 30 - j, others 0.

    Sampling from it is deterministic in practice (the runner-up has e^-1 of the favourite's mass, the rest e^-30).
    Its "KV cache" is each row's last position, so it can check that every step continues the one before."""

    def __init__(self, favourites):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.favourites = favourites
        self.calls = 0
        self.width = {}  # the attention-mask width each cache expects next

    def row(self, n: int) -> torch.Tensor:
        logits_V = torch.zeros(V)
        for j, token in enumerate(self.favourites(n)):
            logits_V[token] = 30.0 - j
        return logits_V

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep, **kwargs):
        self.calls += 1
        last_B = kwargs[CACHE_KEY]
        if last_B is not None:
            assert torch.equal(position_ids[:, 0], last_B + 1) and attention_mask.shape[1] == self.width[id(last_B)]
        rows = [[self.row(p + 1) for p in pos] for pos in position_ids[:, -logits_to_keep:].tolist()]
        last_B = position_ids[:, -1].clone()
        self.width[id(last_B)] = attention_mask.shape[1] + 1
        return CausalLMOutputWithPast(logits=torch.stack([torch.stack(r) for r in rows]), **{CACHE_KEY: last_B})


def prompts(*lengths: int) -> list[list[int]]:
    return [[1] * n for n in lengths]


@pytest.fixture(scope="module")
def other_teacher(tiny):
    return tiny_random_model(tiny[1], seed=1)


@pytest.mark.parametrize("k", [1, 2, 3, 4, V])
def test_kept_tokens_are_in_teacher_topk_and_the_rest_come_from_the_teacher(k):
    student = TableLM(lambda n: [2 + (2 * n) % 7])
    teacher = TableLM(lambda n: [2 + (n + j) % 7 for j in range(3)])
    sp, tp = prompts(3, 5, 1), prompts(6, 7, 4)
    out = corrected_sample(student, teacher, TOK, sp, tp, k=k, max_new_tokens=10)
    ro = out.rollout
    assert ro.prompt_index == [0, 1, 2] and ro.hit_cap == [True] * 3
    expected = []
    for i in range(3):
        assert len(ro.completions[i]) == len(out.accepted[i]) == len(ro.sample_logprobs[i]) == 10
        steps = zip(ro.completions[i], out.accepted[i], ro.sample_logprobs[i], strict=True)
        for t, (token, kept, logp) in enumerate(steps):
            proposal = 2 + (2 * (len(sp[i]) + t)) % 7
            favourites = teacher.favourites(len(tp[i]) + t)
            # Past the 3 favourites every teacher logit ties at 0, and ties count as in the top-k.
            expected.append(proposal in favourites[:k] or k > len(favourites))
            assert kept == expected[-1]
            drawn_from = student.row(len(sp[i]) + t) if kept else teacher.row(len(tp[i]) + t)
            assert token == proposal if kept else token in favourites
            assert logp == pytest.approx(torch.log_softmax(drawn_from, -1)[token].item(), abs=1e-5)
            assert torch.equal(out.teacher_logits_BCV[i, t], teacher.row(len(tp[i]) + t))
    assert out.acceptance_rate == pytest.approx(sum(expected) / len(expected))
    if k in (2, 3):
        assert 0 < sum(expected) < len(expected)


def test_one_token_teacher_with_k1_overrides_every_other_token():
    student = TableLM(lambda n: [5 + n % 3])
    teacher = TableLM(lambda n: [7])
    sp = prompts(2, 3, 4)
    out = corrected_sample(student, teacher, TOK, sp, prompts(9, 9, 9), k=1, max_new_tokens=6)
    for i, comp in enumerate(out.rollout.completions):
        assert comp == [7] * 6
        assert out.accepted[i] == [5 + (len(sp[i]) + t) % 3 == 7 for t in range(6)]
    assert out.acceptance_rate == pytest.approx(1 / 3)


def test_live_table_teacher_decodes_two_streams_on_one_module():
    live = TableLM(lambda n: [2 + n % 5])
    sp, tp = prompts(2, 3), prompts(4, 6)
    out = corrected_sample(live, live, TOK, sp, tp, k=1, max_new_tokens=4)  # TableLM checks each stream's steps
    assert out.rollout.completions == [[2 + (len(tp[i]) + t) % 5 for t in range(4)] for i in range(2)]
    assert out.acceptance_rate == 0.0 and live.calls == 2 * 4


def test_rows_stop_at_eos_and_decoding_stops_when_all_have():
    student = TableLM(lambda n: [EOS if n == 6 else 3])
    teacher = TableLM(lambda n: [EOS if n == 8 else 3])  # its prompt is 2 tokens longer: the same step
    sp = prompts(2, 4, 6)
    tp = [p + [1, 1] for p in sp]
    out = corrected_sample(student, teacher, TOK, sp, tp, k=1, max_new_tokens=10)
    assert out.rollout.completions == [[3, 3, 3, 3, EOS], [3, 3, EOS], [EOS]]
    assert out.rollout.hit_cap == [False] * 3 and out.acceptance_rate == 1.0
    assert student.calls == teacher.calls == 5  # the prompt, then one token per step but the last
    assert out.teacher_logits_BCV.shape == (3, 5, V)
    assert out.teacher_logits_BCV[1, 3:].abs().sum() == 0 and out.teacher_logits_BCV[2, 1:].abs().sum() == 0

    capped = corrected_sample(TableLM(student.favourites), teacher, TOK, sp, tp, k=1, max_new_tokens=3)
    assert capped.rollout.completions == [[3, 3, 3], [3, 3, EOS], [EOS]]
    assert capped.rollout.hit_cap == [True, False, False]


def test_k_equal_to_vocab_is_plain_student_sampling(tiny, other_teacher):
    model, tok = tiny
    sp, tp = [[1, 5, 6, 7], [1, 9]], [[1, 11, 12, 13, 5, 6, 7], [1, 14, 9]]
    torch.manual_seed(0)
    plain = sample(model, tok, sp, max_new_tokens=6)
    torch.manual_seed(0)
    out = corrected_sample(model, other_teacher, tok, sp, tp, k=len(tok), max_new_tokens=6)
    assert out.rollout.completions == plain.completions and out.rollout.hit_cap == plain.hit_cap
    for ours, theirs in zip(out.rollout.sample_logprobs, plain.sample_logprobs, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-4)
    assert out.acceptance_rate == 1.0 and all(all(a) for a in out.accepted)


def test_teacher_logits_and_logprobs_match_full_forward(tiny, other_teacher):
    model, tok = tiny
    sp, tp = [[1, 5, 6, 7, 8], [1, 9], [1, 4, 4]], [[1, 11, 5, 6, 7, 8], [1, 12, 13, 14, 15, 9], [1, 16, 4, 4]]
    k, temperature = len(tok) // 2, 0.7
    rng_before = torch.get_rng_state()
    out = corrected_sample(
        model, other_teacher, tok, sp, tp, k=k, temperature=temperature, max_new_tokens=8, seeds=[3, 4, 5]
    )
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeds, when given, are the only randomness
    comps = out.rollout.completions
    teacher_packed, student_packed = pack(tp, comps, tok.pad_token_id), pack(sp, comps, tok.pad_token_id)
    with torch.no_grad():
        teacher_BCV = completion_logits(other_teacher, teacher_packed)
        student_BCV = completion_logits(model, student_packed)
    mask_BC = teacher_packed.completion_mask_BC.bool()
    assert out.teacher_logits_BCV.dtype == torch.float32 and out.teacher_logits_BCV.shape == teacher_BCV.shape
    assert torch.allclose(out.teacher_logits_BCV[mask_BC], teacher_BCV[mask_BC], atol=1e-4)
    assert out.teacher_logits_BCV[~mask_BC].abs().sum() == 0
    flat = [a for row in out.accepted for a in row]
    assert any(flat) and not all(flat)
    for i, comp in enumerate(comps):
        steps = zip(comp, out.accepted[i], out.rollout.sample_logprobs[i], strict=True)
        for t, (token, kept, logp) in enumerate(steps):
            q_V = teacher_BCV[i, t]
            if kept:
                assert (q_V > q_V[token]).sum() < k
            drawn_from = student_BCV[i, t] if kept else q_V
            assert logp == pytest.approx(torch.log_softmax(drawn_from / temperature, -1)[token].item(), abs=1e-4)

    again = corrected_sample(
        model, other_teacher, tok, sp, tp, k=k, temperature=temperature, max_new_tokens=8, seeds=[3, 4, 5]
    )
    assert again.rollout.completions == comps and again.accepted == out.accepted


def test_tiny_top_p_matches_a_step_by_step_greedy_reference(tiny, other_teacher):
    """top_p → 0 leaves each nucleus one token: the student's argmax, kept if in the teacher's top-k, else the
    teacher's argmax; recomputed here with full forward passes and no cache."""
    model, tok = tiny
    sp, tp = [[1, 5, 6, 7], [1, 9]], [[1, 11, 12, 5, 6, 7], [1, 13, 14, 15, 16, 9]]
    k = len(tok) // 2
    out = corrected_sample(model, other_teacher, tok, sp, tp, k=k, top_p=1e-6, max_new_tokens=6)
    with torch.no_grad():
        for i in range(2):
            comp, kept = [], []
            for _ in range(len(out.rollout.completions[i])):
                s_V = model(torch.tensor([sp[i] + comp]), logits_to_keep=1).logits[0, -1]
                q_V = other_teacher(torch.tensor([tp[i] + comp]), logits_to_keep=1).logits[0, -1]
                token = int(s_V.argmax())
                kept.append(bool((q_V > q_V[token]).sum() < k))
                comp.append(token if kept[-1] else int(q_V.argmax()))
            assert out.rollout.completions[i] == comp and out.accepted[i] == kept


def test_nucleus_keeps_the_shortest_head_reaching_top_p():
    probs_BV = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    assert _nucleus(probs_BV, 0.7).tolist() == [[0.0, 0.5, 0.0, 0.25]]
    assert _nucleus(probs_BV, 0.75).tolist() == [[0.0, 0.5, 0.0, 0.25]]
    assert _nucleus(probs_BV, 0.76)[0].tolist() == pytest.approx([0.0, 0.5, 0.15, 0.25])
    assert _nucleus(probs_BV, 1e-9).tolist() == [[0.0, 0.5, 0.0, 0.0]]
    assert torch.equal(_nucleus(probs_BV, 1.0), probs_BV)


def test_live_teacher_uses_its_own_cache_and_restores_modes(tiny):
    model, tok = tiny
    model.train()
    model.model.layers[0].eval()
    modes = {name: m.training for name, m in model.named_modules()}
    sp, tp = [[1, 5, 6], [1, 9, 8, 7]], [[1, 20, 21, 22, 5, 6], [1, 23, 9, 8, 7]]
    try:
        out = corrected_sample(model, model, tok, sp, tp, k=100, max_new_tokens=6, seeds=[0] * len(sp))
        assert {name: m.training for name, m in model.named_modules()} == modes
    finally:
        model.eval()
    packed = pack(tp, out.rollout.completions, tok.pad_token_id)
    with torch.no_grad():
        teacher_BCV = completion_logits(model, packed)
    mask_BC = packed.completion_mask_BC.bool()
    assert torch.allclose(out.teacher_logits_BCV[mask_BC], teacher_BCV[mask_BC], atol=1e-4)
    assert 0.0 <= out.acceptance_rate <= 1.0 and not math.isnan(out.acceptance_rate)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, r"k \(the teacher's top-k\) must be >= 1, got 0"),
        ({"k": V + 1}, rf"must be <= the vocabulary size {V}, got {V + 1}"),
        ({"k": 1, "temperature": 0.0}, "temperature must be > 0"),
        ({"k": 1, "top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"k": 1, "max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    lm = TableLM(lambda n: [3])
    with pytest.raises(ValueError, match=message):
        corrected_sample(lm, lm, TOK, prompts(2), prompts(3), **kwargs)


def test_mismatched_or_empty_prompts_raise():
    lm = TableLM(lambda n: [3])
    with pytest.raises(ValueError, match="2 student prompts but 1 teacher prompts"):
        corrected_sample(lm, lm, TOK, prompts(2, 2), prompts(3), k=1)
    with pytest.raises(ValueError, match="at least one token"):
        corrected_sample(lm, lm, TOK, [[1], []], prompts(3, 3), k=1)
