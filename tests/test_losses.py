"""Each loss against a naive reference written out plainly (explicit probabilities, Python sums)."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfdistill.training.losses import (
    distill_loss,
    distill_loss_and_stats,
    forward_kl,
    head_forward_kl,
    jsd,
    masked_mean,
    masked_mean_weights,
    reverse_kl,
    sampled_kl,
    token_nll,
    token_stats,
    topk_kl,
)

B, T, V = 2, 3, 11
SUPPORTS_AND_DIVERGENCES = [
    ("full", "forward"),
    ("full", "reverse"),
    ("full", "jsd"),
    ("topk", "forward"),
    ("topk", "reverse"),
    ("topk", "jsd"),
    ("sampled", "forward"),
]


def _logits(*shape, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * scale


def _pair(vocab=V, seed=0):
    return _logits(B, T, vocab, seed=seed), _logits(B, T, vocab, seed=seed + 100)


def _probs(logits_BTV):
    """Softmax in float64, written out."""
    e = torch.exp(logits_BTV.double() - logits_BTV.double().max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def _naive_kl(a_BTV, b_BTV):
    """KL(a || b) from probability tensors, one Python sum per position."""
    out = torch.zeros(a_BTV.shape[:2], dtype=torch.float64)
    for i in range(a_BTV.shape[0]):
        for t in range(a_BTV.shape[1]):
            out[i, t] = sum(
                float(a) * math.log(float(a) / float(b)) for a, b in zip(a_BTV[i, t], b_BTV[i, t], strict=True)
            )
    return out


def _naive_jsd(p_BTV, q_BTV, beta):
    m_BTV = beta * q_BTV + (1 - beta) * p_BTV
    return beta * _naive_kl(q_BTV, m_BTV) + (1 - beta) * _naive_kl(p_BTV, m_BTV)


def _close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=1e-5)


# ---------------------------------------------------------------- exact divergences


@pytest.mark.parametrize(
    "fn", [forward_kl, reverse_kl, jsd, lambda s, t: jsd(s, t, 0.2), lambda s, t: topk_kl(s, t, 3)]
)
def test_divergence_of_a_distribution_with_itself_is_zero(fn):
    s, _ = _pair()
    _close(fn(s, s.clone()), torch.zeros(B, T))


@pytest.mark.parametrize(
    "fn",
    [
        forward_kl,
        reverse_kl,
        lambda s, t: jsd(s, t, 0.1),
        lambda s, t: jsd(s, t, 0.5),
        lambda s, t: jsd(s, t, 0.9),
        lambda s, t: topk_kl(s, t, 2, "forward"),
        lambda s, t: topk_kl(s, t, 2, "reverse"),
    ],
)
def test_divergences_are_nonnegative_on_random_logits(fn):
    for seed in range(5):
        s, t = _pair(seed=seed)
        assert (fn(s, t) >= -1e-6).all()


def test_forward_and_reverse_kl_match_naive_formulas():
    s, t = _pair()
    p, q = _probs(s), _probs(t)
    _close(forward_kl(s, t), _naive_kl(q, p))
    _close(reverse_kl(s, t), _naive_kl(p, q))


def test_kl_at_vocab_1000_matches_naive():
    s, t = _pair(vocab=1000, seed=3)
    p, q = _probs(s), _probs(t)
    _close(forward_kl(s, t), (q * (q.log() - p.log())).sum(-1))
    _close(reverse_kl(s, t), (p * (p.log() - q.log())).sum(-1))
    _close(topk_kl(s, t, 1000, "forward"), forward_kl(s, t))
    _close(distill_loss(s, t, torch.zeros(B, T, dtype=torch.long), chunk_size=2), forward_kl(s, t))


def test_jsd_endpoints_are_forward_and_reverse_kl():
    s, t = _pair()
    p, q = _probs(s), _probs(t)
    _close(jsd(s, t, beta=0.0), _naive_kl(q, p))
    _close(jsd(s, t, beta=1.0), _naive_kl(p, q))


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.8])
def test_jsd_matches_naive_mixture(beta):
    s, t = _pair(seed=1)
    _close(jsd(s, t, beta), _naive_jsd(_probs(s), _probs(t), beta))


def test_jsd_at_half_is_symmetric_and_at_most_log2():
    s, t = _pair(seed=2)
    _close(jsd(s, t, 0.5), jsd(t, s, 0.5))
    assert (jsd(s, t, 0.5) <= math.log(2)).all()
    # Nearly disjoint supports approach the bound.
    far_s, far_t = torch.full((1, 1, 4), -50.0), torch.full((1, 1, 4), -50.0)
    far_s[..., 0], far_t[..., 1] = 50.0, 50.0
    value = jsd(far_s, far_t, 0.5)
    assert value.item() <= math.log(2) + 1e-6
    assert value.item() == pytest.approx(math.log(2), abs=1e-4)


def test_jsd_rejects_beta_outside_unit_interval():
    s, t = _pair()
    with pytest.raises(ValueError, match="beta"):
        jsd(s, t, 1.5)


# ---------------------------------------------------------------- top-k + tail


@pytest.mark.parametrize("divergence", ["forward", "reverse", "jsd"])
def test_topk_with_k_equal_vocab_matches_full_value_and_gradient(divergence):
    full_fn = {"forward": forward_kl, "reverse": reverse_kl, "jsd": jsd}[divergence]
    s, t = _pair(seed=4)
    s_full, s_top = s.clone().requires_grad_(), s.clone().requires_grad_()
    full = full_fn(s_full, t)
    top = topk_kl(s_top, t, V, divergence)
    _close(top, full)
    full.sum().backward()
    top.sum().backward()
    _close(s_top.grad, s_full.grad)


def _naive_binned(p_BTV, q_BTV, k):
    """p and q coarse-grained onto [teacher's top-k tokens..., everything else], position by position."""
    p_bins = torch.zeros(*p_BTV.shape[:2], k + 1, dtype=torch.float64)
    q_bins = torch.zeros_like(p_bins)
    for i in range(p_BTV.shape[0]):
        for t in range(p_BTV.shape[1]):
            ranked = sorted(range(p_BTV.shape[2]), key=lambda v, i=i, t=t: -float(q_BTV[i, t, v]))
            top = ranked[:k]
            for j, v in enumerate(top):
                p_bins[i, t, j], q_bins[i, t, j] = p_BTV[i, t, v], q_BTV[i, t, v]
            p_bins[i, t, k] = sum(float(p_BTV[i, t, v]) for v in ranked[k:])
            q_bins[i, t, k] = sum(float(q_BTV[i, t, v]) for v in ranked[k:])
    return p_bins, q_bins


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_with_small_k_matches_naive_binning(k):
    s, t = _pair(seed=5)
    p_bins, q_bins = _naive_binned(_probs(s), _probs(t), k)
    _close(topk_kl(s, t, k, "forward"), _naive_kl(q_bins, p_bins))
    _close(topk_kl(s, t, k, "reverse"), _naive_kl(p_bins, q_bins))
    _close(topk_kl(s, t, k, "jsd", beta=0.3), _naive_jsd(p_bins, q_bins, 0.3))
    # Coarse-graining can only lose divergence.
    assert (topk_kl(s, t, k, "forward") <= forward_kl(s, t) + 1e-6).all()


def test_topk_tail_is_exact_when_topk_holds_almost_all_mass():
    s, t = _pair(seed=6)
    t[..., 0] += 40.0  # teacher tail mass ~1e-17: log(1 - Σ top-k) would be log(0)
    p_bins, q_bins = _naive_binned(_probs(s), _probs(t), 1)
    value = topk_kl(s, t, 1, "reverse")
    assert torch.isfinite(value).all()
    _close(value, _naive_kl(p_bins, q_bins), atol=1e-4)


# ---------------------------------------------------------------- sampled, NLL, masked mean


def test_sampled_kl_is_logprob_difference_at_the_token():
    s, t = _pair(seed=7)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    p, q = _probs(s), _probs(t)
    expected = torch.tensor(
        [[math.log(p[i, j, tokens[i, j]]) - math.log(q[i, j, tokens[i, j]]) for j in range(T)] for i in range(B)]
    )
    _close(sampled_kl(s, t, tokens), expected)


def test_sampled_kl_mean_over_student_samples_estimates_reverse_kl():
    n = 40_000
    s, t = _logits(1, 1, V, seed=8), _logits(1, 1, V, seed=9)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.multinomial(_probs(s)[0, 0], n, replacement=True, generator=gen)
    estimate = sampled_kl(s.expand(n, 1, V), t.expand(n, 1, V), tokens[:, None]).mean()
    assert estimate.item() == pytest.approx(reverse_kl(s, t).item(), abs=0.02)


def test_sampled_distill_loss_gradient_estimates_reverse_kl_gradient():
    n = 40_000
    s, t = _logits(V, seed=10).requires_grad_(), _logits(1, 1, V, seed=11)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.multinomial(torch.softmax(s.detach(), -1), n, replacement=True, generator=gen)
    loss_BT = distill_loss(s.expand(n, 1, V), t.expand(n, 1, V), tokens[:, None], support="sampled")
    (grad_estimate,) = torch.autograd.grad(masked_mean(loss_BT, torch.ones(n, 1)), s)
    (grad_exact,) = torch.autograd.grad(reverse_kl(s[None, None], t).sum(), s)
    _close(grad_estimate, grad_exact, atol=0.02)


def test_token_nll_matches_cross_entropy_including_ignored_targets():
    s, _ = _pair(seed=12)
    targets = torch.tensor([[1, 4, -100], [10, 0, 3]])
    expected = F.cross_entropy(s.reshape(-1, V), targets.reshape(-1), reduction="none").reshape(B, T)
    _close(token_nll(s, targets), expected)


def test_masked_mean_is_per_sequence_mean_then_mean_over_nonempty_sequences():
    loss = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [5.0, 5.0, 5.0, float("nan")]])
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    # (1 + 2) / 2 = 1.5 and 40 / 1 = 40; the empty third row is left out: (1.5 + 40) / 2.
    assert masked_mean(loss, mask).item() == pytest.approx(20.75)
    assert masked_mean(loss, mask.bool()).item() == pytest.approx(20.75)


def test_masked_mean_of_all_empty_rows_is_zero_with_a_grad_path():
    loss = torch.ones(2, 3, requires_grad=True)
    value = masked_mean(loss, torch.zeros(2, 3))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(loss.grad, torch.zeros(2, 3))


# ---------------------------------------------------------------- distill_loss: chunks, masks, grads, dtypes


@pytest.mark.parametrize(("support", "divergence"), SUPPORTS_AND_DIVERGENCES)
def test_masked_tokens_get_exactly_zero_gradient(support, divergence):
    s, t = _pair(seed=13)
    s.requires_grad_()
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    loss = masked_mean(distill_loss(s, t, tokens, support=support, divergence=divergence, k=3), mask)
    loss.backward()
    assert torch.equal(s.grad[mask == 0], torch.zeros_like(s.grad[mask == 0]))
    assert (s.grad[mask == 1].abs().sum(-1) > 0).all()


@pytest.mark.parametrize(("support", "divergence"), SUPPORTS_AND_DIVERGENCES)
def test_chunked_loss_equals_unchunked_value_and_gradient(support, divergence):
    s, t = _logits(B, 7, V, seed=14), _logits(B, 7, V, seed=15)
    tokens = torch.randint(0, V, (B, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(B, 7)
    results = []
    for chunk_size in (3, 64):  # 3 does not divide T = 7
        s_leaf = s.clone().requires_grad_()
        loss_BT = distill_loss(s_leaf, t, tokens, support=support, divergence=divergence, k=4, chunk_size=chunk_size)
        masked_mean(loss_BT, mask).backward()
        results.append((loss_BT.detach(), s_leaf.grad))
    (chunked, chunked_grad), (whole, whole_grad) = results
    _close(chunked, whole)
    _close(chunked_grad, whole_grad)


@pytest.mark.parametrize(("support", "divergence"), SUPPORTS_AND_DIVERGENCES)
def test_distill_loss_matches_the_primitives(support, divergence):
    s, t = _pair(seed=16)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(4))
    loss = distill_loss(s, t, tokens, support=support, divergence=divergence, k=3, beta=0.3, chunk_size=2)
    if support == "sampled":
        expected = sampled_kl(s, t, tokens)
    elif support == "topk":
        expected = topk_kl(s, t, 3, divergence, beta=0.3)
    else:
        expected = {"forward": forward_kl(s, t), "reverse": reverse_kl(s, t), "jsd": jsd(s, t, 0.3)}[divergence]
    _close(loss, expected)


def test_teacher_logits_get_no_gradient():
    s, t = _pair(seed=17)
    s.requires_grad_()
    t.requires_grad_()
    tokens = torch.zeros(B, T, dtype=torch.long)
    for support in ("full", "topk", "sampled"):
        distill_loss(s, t, tokens, support=support, k=3, chunk_size=2).sum().backward()
    assert t.grad is None
    assert s.grad is not None


def test_bf16_inputs_give_fp32_outputs():
    s, t = (x.bfloat16() for x in _pair(seed=18))
    tokens = torch.zeros(B, T, dtype=torch.long)
    outputs = [
        forward_kl(s, t),
        reverse_kl(s, t),
        jsd(s, t),
        topk_kl(s, t, 3),
        sampled_kl(s, t, tokens),
        token_nll(s, tokens),
        distill_loss(s, t, tokens),
        masked_mean(forward_kl(s, t).bfloat16(), torch.ones(B, T)),
        *token_stats(s, t, tokens).values(),
    ]
    assert all(out.dtype == torch.float32 for out in outputs)


def test_distill_loss_rejects_bad_options():
    s, t = _pair()
    tokens = torch.zeros(B, T, dtype=torch.long)
    for kwargs in ({"support": "beam"}, {"divergence": "tv"}, {"beta": -0.1}, {"support": "topk", "k": 0}):
        with pytest.raises(ValueError):
            distill_loss(s, t, tokens, **kwargs)
    with pytest.raises(ValueError, match="same"):
        distill_loss(s, t[..., :5], tokens)


def test_token_stats_match_naive_values_without_grad():
    s, t = _pair(seed=19)
    s.requires_grad_()
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(5))
    stats = token_stats(s, t, tokens, chunk_size=2)
    p, q = _probs(s.detach()), _probs(t)
    gap = q.gather(-1, tokens[..., None]).log() - p.gather(-1, tokens[..., None]).log()
    _close(stats["teacher_minus_student_logprob"], gap[..., 0])
    _close(stats["student_entropy"], -(p * p.log()).sum(-1))
    assert not any(v.requires_grad for v in stats.values())


@pytest.mark.parametrize("support", ["full", "topk", "sampled"])
def test_distill_loss_keeps_no_fp32_intermediates_for_backward(support):
    s, t = _logits(B, 9, V, seed=20).bfloat16().requires_grad_(), _logits(B, 9, V, seed=21).bfloat16()
    tokens = torch.zeros(B, 9, dtype=torch.long)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        distill_loss(s, t, tokens, support=support, k=3, chunk_size=4)
    # Checkpointing keeps only the chunk inputs, i.e. views into the caller's tensors; the fp32 log-softmaxes
    # are recomputed one chunk at a time in the backward pass.
    inputs = {x.untyped_storage().data_ptr() for x in (s, t, tokens)}
    assert saved
    assert all(x.untyped_storage().data_ptr() in inputs for x in saved)


# ---------------------------------------------------------------- the fused default loss (forward KL, full support)


def test_the_fused_forward_kl_gradient_equals_autograd_of_the_primitive():
    s, t = _logits(B, 7, V, seed=30), _logits(B, 7, V, seed=31)
    t[0, 1, :4] = -math.inf  # the teacher puts no mass on some tokens
    tokens = torch.randint(0, V, (B, 7), generator=torch.Generator().manual_seed(6))
    mask = torch.tensor([[1, 1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 1, 1, 1]])
    grads = []
    for fn in (lambda x: distill_loss(x, t, tokens, chunk_size=3), lambda x: forward_kl(x, t)):
        leaf = s.clone().requires_grad_()
        masked_mean(fn(leaf), mask).backward()
        grads.append(leaf.grad)
    _close(grads[0], grads[1])
    assert torch.equal(grads[0][mask == 0], torch.zeros_like(grads[0][mask == 0]))


def test_the_fused_gradient_of_bf16_logits_is_bf16_and_close_to_fp32():
    s, t = _logits(B, 5, V, seed=32), _logits(B, 5, V, seed=33)
    tokens = torch.zeros(B, 5, dtype=torch.long)
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        leaf = s.detach().to(dtype).requires_grad_()
        distill_loss(leaf, t.to(dtype), tokens).sum().backward()
        grads[dtype] = leaf.grad
    assert grads[torch.bfloat16].dtype == torch.bfloat16
    torch.testing.assert_close(grads[torch.bfloat16].float(), grads[torch.float32], rtol=0.05, atol=0.02)


@pytest.mark.parametrize(("support", "divergence"), [("full", "forward"), ("full", "reverse"), ("topk", "forward")])
def test_loss_and_stats_together_equal_each_alone(support, divergence):
    s, t = _logits(B, 7, V, seed=34), _logits(B, 7, V, seed=35)
    tokens = torch.randint(0, V, (B, 7), generator=torch.Generator().manual_seed(7))
    options = {"support": support, "divergence": divergence, "k": 4, "chunk_size": 3}
    leaf = s.clone().requires_grad_()
    loss_BT, stats = distill_loss_and_stats(leaf, t, tokens, **options)
    _close(loss_BT, distill_loss(s, t, tokens, **options))
    alone = token_stats(s, t, tokens, chunk_size=3)
    assert stats.keys() == alone.keys()
    for name in stats:
        _close(stats[name], alone[name])
        assert not stats[name].requires_grad
    loss_BT.sum().backward()  # the stats do not get in the way of the loss's backward
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


# ---------------------------------------------------------------- the LM head inside the default loss


def _heads(hidden, vocab, bias, seed):
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.nn.Linear(hidden, vocab, bias=bias), torch.nn.Linear(hidden, vocab, bias=bias)
    with torch.no_grad():
        for p in (*student.parameters(), *teacher.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    return student, teacher


@pytest.mark.parametrize("bias", [False, True])
def test_the_head_loss_equals_the_logits_loss_in_value_gradients_and_stats(bias):
    """Reference: the logits materialized by the heads, the default distill_loss, masked_mean, autograd."""
    H, C = 6, 7
    student, teacher = _heads(H, V, bias, seed=40)
    hs = torch.randn(B, C, H, generator=torch.Generator().manual_seed(41))
    ht = torch.randn(B, C, H, generator=torch.Generator().manual_seed(42))
    tokens = torch.randint(0, V, (B, C), generator=torch.Generator().manual_seed(43))
    mask = torch.tensor([[1, 1, 1, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1]])

    leaf = hs.clone().requires_grad_()
    loss_BT, stats = distill_loss_and_stats(student(leaf), teacher(ht), tokens, chunk_size=2)
    masked_mean(loss_BT, mask).backward()
    expected = [leaf.grad, *(p.grad for p in student.parameters())]
    student.zero_grad(set_to_none=True)

    leaf = hs.clone().requires_grad_()
    loss, kl_BT, head_stats = head_forward_kl(
        leaf, student, ht, teacher, tokens, masked_mean_weights(mask), chunk_size=3
    )
    (2.0 * loss).backward()  # the upstream gradient scales every input's gradient
    _close(loss, masked_mean(loss_BT, mask).detach())
    for got, want in zip([leaf.grad, *(p.grad for p in student.parameters())], expected, strict=True):
        _close(got, 2.0 * want)
    assert all(p.grad is None for p in teacher.parameters())
    assert torch.equal(leaf.grad[mask == 0], torch.zeros_like(leaf.grad[mask == 0]))
    kept = mask.bool()
    _close(kl_BT[kept], loss_BT.detach()[kept])
    assert torch.equal(kl_BT[~kept], torch.zeros_like(kl_BT[~kept]))
    for name, value in head_stats.items():
        _close(value[kept], stats[name][kept])


@pytest.mark.parametrize("bias", [False, True])
def test_the_head_loss_at_a_teacher_temperature_is_the_loss_of_the_scaled_teacher_logits(bias):
    """teacher_temperature τ: the target is softmax(teacher logits / τ), in value, gradients and stats."""
    H, C, tau = 6, 5, 0.5
    student, teacher = _heads(H, V, bias, seed=50)
    hs = torch.randn(B, C, H, generator=torch.Generator().manual_seed(51))
    ht = torch.randn(B, C, H, generator=torch.Generator().manual_seed(52))
    tokens = torch.randint(0, V, (B, C), generator=torch.Generator().manual_seed(53))
    mask = torch.tensor([[1, 1, 1, 0, 1], [0, 1, 1, 1, 1]])

    leaf = hs.clone().requires_grad_()
    loss_BT, stats = distill_loss_and_stats(student(leaf), teacher(ht) / tau, tokens, chunk_size=2)
    masked_mean(loss_BT, mask).backward()
    expected = leaf.grad
    leaf = hs.clone().requires_grad_()
    loss, kl_BT, head_stats = head_forward_kl(
        leaf, student, ht, teacher, tokens, masked_mean_weights(mask), chunk_size=3, teacher_temperature=tau
    )
    loss.backward()
    _close(loss, masked_mean(loss_BT, mask).detach())
    _close(leaf.grad, expected)
    kept = mask.bool()
    _close(kl_BT[kept], loss_BT.detach()[kept])
    _close(head_stats["teacher_minus_student_logprob"][kept], stats["teacher_minus_student_logprob"][kept])
    untempered = head_forward_kl(hs, student, ht, teacher, tokens, masked_mean_weights(mask), chunk_size=3)[0]
    assert not torch.allclose(untempered, loss)  # a sharper target is another loss
    with pytest.raises(ValueError, match="teacher_temperature"):
        head_forward_kl(hs, student, ht, teacher, tokens, masked_mean_weights(mask), teacher_temperature=0.0)


def test_masked_mean_weights_reproduce_masked_mean():
    loss = _logits(3, 5, seed=44)
    for mask in (torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]), torch.zeros(3, 5)):
        _close((masked_mean_weights(mask) * loss).sum(), masked_mean(loss, mask))


def test_the_head_loss_under_bf16_autocast_matches_the_model_path():
    """Under autocast the heads run in bf16 as nn.Linear does there; gradients land in fp32 parameters."""
    H, C = 8, 5
    student, teacher = _heads(H, V, False, seed=45)
    hs = torch.randn(B, C, H, generator=torch.Generator().manual_seed(46))
    ht = torch.randn(B, C, H, generator=torch.Generator().manual_seed(47))
    tokens = torch.randint(0, V, (B, C), generator=torch.Generator().manual_seed(48))
    weights = masked_mean_weights(torch.ones(B, C))
    results = []
    for fused in (False, True):
        leaf = hs.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fused:
                loss = head_forward_kl(leaf, student, ht, teacher, tokens, weights)[0]
            else:
                loss = (distill_loss(student(leaf), teacher(ht), tokens) * weights).sum()
        loss.backward()
        results.append((loss.detach(), leaf.grad.clone(), student.weight.grad.clone()))
        assert student.weight.grad.dtype == torch.float32
        student.zero_grad(set_to_none=True)
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=0.02, atol=0.02)


def test_the_head_loss_with_every_position_masked_is_zero_and_backpropagates():
    student, teacher = _heads(4, V, False, seed=49)
    leaf = torch.randn(B, 3, 4).requires_grad_()
    tokens = torch.zeros(B, 3, dtype=torch.long)
    loss, kl_BT, _ = head_forward_kl(
        leaf, student, torch.randn(B, 3, 4), teacher, tokens, masked_mean_weights(torch.zeros(B, 3))
    )
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(leaf.grad, torch.zeros_like(leaf))
    assert torch.equal(kl_BT, torch.zeros(B, 3))


def test_the_head_loss_refuses_a_second_backward():
    student, teacher = _heads(4, V, False, seed=50)
    leaf = torch.randn(B, 3, 4).requires_grad_()
    loss = head_forward_kl(
        leaf,
        student,
        torch.randn(B, 3, 4),
        teacher,
        torch.zeros(B, 3, dtype=torch.long),
        masked_mean_weights(torch.ones(B, 3)),
    )[0]
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


# ---------------------------------------------------------------- both logits divided by a temperature T


@pytest.mark.parametrize(("support", "divergence"), SUPPORTS_AND_DIVERGENCES)
def test_a_temperature_divides_both_logits_before_the_divergence(support, divergence):
    """Reference: the naive divergence of softmax(s / T) and softmax(t / T); gradients against autograd of the
    untempered loss of the scaled logits, whose chain rule brings the 1 / T."""
    s, t = _logits(B, 7, V, seed=60), _logits(B, 7, V, seed=61)
    tokens = torch.randint(0, V, (B, 7), generator=torch.Generator().manual_seed(8))
    options = {"support": support, "divergence": divergence, "k": 4, "beta": 0.3, "chunk_size": 3}
    tau = 0.5
    leaf = s.clone().requires_grad_()
    loss_BT = distill_loss(leaf, t, tokens, temperature=tau, **options)
    loss_BT.sum().backward()
    ref_leaf = s.clone().requires_grad_()
    ref_BT = distill_loss(ref_leaf / tau, t / tau, tokens, **options)
    ref_BT.sum().backward()
    _close(loss_BT, ref_BT)
    _close(leaf.grad, ref_leaf.grad)
    p, q = _probs(s / tau), _probs(t / tau)
    if (support, divergence) == ("full", "forward"):
        _close(loss_BT, _naive_kl(q, p))
    if (support, divergence) == ("full", "reverse"):
        _close(loss_BT, _naive_kl(p, q))
    if (support, divergence) == ("full", "jsd"):
        _close(loss_BT, _naive_jsd(p, q, 0.3))
    assert not torch.allclose(loss_BT, distill_loss(s, t, tokens, **options))  # T changes the loss


def test_the_fused_gradient_at_a_temperature_is_the_tempered_softmax_difference_over_t():
    s, t = _logits(1, 2, V, seed=62), _logits(1, 2, V, seed=63)
    tau = 2.0
    leaf = s.clone().requires_grad_()
    distill_loss(leaf, t, torch.zeros(1, 2, dtype=torch.long), temperature=tau).sum().backward()
    expected = (_probs(s / tau) - _probs(t / tau)) / tau  # d/ds KL(q_T || softmax(s / T)), written out
    _close(leaf.grad, expected)


@pytest.mark.parametrize(("support", "divergence"), SUPPORTS_AND_DIVERGENCES)
def test_temperature_one_is_bit_identical_to_no_temperature(support, divergence):
    s, t = (x.bfloat16() for x in _pair(seed=64))
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(9))
    options = {"support": support, "divergence": divergence, "k": 3, "chunk_size": 2}
    grads, values = [], []
    for extra in ({}, {"temperature": 1.0}, {"temperature": 1}):
        leaf = s.clone().requires_grad_()
        loss_BT, stats = distill_loss_and_stats(leaf, t, tokens, **options, **extra)
        masked_mean(loss_BT, torch.ones(B, T)).backward()
        values.append((loss_BT.detach(), *stats.values()))
        grads.append(leaf.grad)
    for other in range(1, 3):
        assert all(torch.equal(a, b) for a, b in zip(values[0], values[other], strict=True))
        assert torch.equal(grads[0], grads[other])


def test_token_stats_at_a_temperature_are_those_of_the_scaled_logits():
    s, t = _pair(seed=65)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(10))
    tempered = token_stats(s, t, tokens, temperature=0.7)
    scaled = token_stats(s / 0.7, t / 0.7, tokens)
    for name in scaled:
        _close(tempered[name], scaled[name])


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_a_temperature_must_be_positive(bad):
    s, t = _pair()
    tokens = torch.zeros(B, T, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        distill_loss(s, t, tokens, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        token_stats(s, t, tokens, temperature=bad)
    student, teacher = _heads(4, V, False, seed=66)
    with pytest.raises(ValueError, match="temperature"):
        head_forward_kl(
            torch.randn(B, T, 4), student, torch.randn(B, T, 4), teacher, tokens, torch.ones(B, T), temperature=bad
        )


@pytest.mark.parametrize(("bias", "teacher_tau"), [(False, 1.0), (True, 1.0), (False, 0.5)])
def test_the_head_loss_at_a_temperature_is_the_loss_of_both_scaled_logits(bias, teacher_tau):
    """Reference: materialized logits, student / T and teacher / (T · τ), through the logits path and autograd."""
    H, C, temp = 6, 5, 0.6
    student, teacher = _heads(H, V, bias, seed=67)
    hs = torch.randn(B, C, H, generator=torch.Generator().manual_seed(68))
    ht = torch.randn(B, C, H, generator=torch.Generator().manual_seed(69))
    tokens = torch.randint(0, V, (B, C), generator=torch.Generator().manual_seed(70))
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 1]])

    leaf = hs.clone().requires_grad_()
    loss_BT, stats = distill_loss_and_stats(student(leaf) / temp, teacher(ht) / (temp * teacher_tau), tokens)
    masked_mean(loss_BT, mask).backward()
    expected = [leaf.grad, *(p.grad for p in student.parameters())]
    student.zero_grad(set_to_none=True)

    leaf = hs.clone().requires_grad_()
    weights = masked_mean_weights(mask)
    loss, kl_BT, head_stats = head_forward_kl(
        leaf, student, ht, teacher, tokens, weights, chunk_size=3, teacher_temperature=teacher_tau, temperature=temp
    )
    loss.backward()
    _close(loss, masked_mean(loss_BT, mask).detach())
    for got, want in zip([leaf.grad, *(p.grad for p in student.parameters())], expected, strict=True):
        _close(got, want)
    kept = mask.bool()
    _close(kl_BT[kept], loss_BT.detach()[kept])
    for name, value in head_stats.items():
        _close(value[kept], stats[name][kept])


def test_the_head_loss_at_temperature_one_is_bit_identical():
    student, teacher = _heads(4, V, True, seed=71)
    hs, ht = torch.randn(B, 3, 4), torch.randn(B, 3, 4)
    tokens = torch.randint(0, V, (B, 3), generator=torch.Generator().manual_seed(11))
    weights = masked_mean_weights(torch.ones(B, 3))
    for tau in (1.0, 0.5):
        runs = []
        for extra in ({}, {"temperature": 1.0}):
            leaf = hs.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, kl_BT, stats = head_forward_kl(
                    leaf, student, ht, teacher, tokens, weights, teacher_temperature=tau, **extra
                )
            loss.backward()
            runs.append((loss.detach(), kl_BT, *stats.values(), leaf.grad, student.weight.grad.clone()))
            student.zero_grad(set_to_none=True)
        assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
