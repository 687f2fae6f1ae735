"""Per-token distillation and SFT losses: pure tensor functions, logits in, ``loss_BT`` out.

    loss = masked_mean(distill_loss(student_logits_BTV, teacher_logits_BTV, tokens_BT), mask_BT)

Shapes: B batch, T completion tokens, V vocabulary, K top-k bins (the teacher's k tokens, plus one tail
bucket when k < V). The student is p = π_θ, the teacher is q. Every function upcasts to float32 and returns
float32. The primitives differentiate both arguments; ``distill_loss`` treats the teacher as a constant.

``temperature`` T (the distillation losses, :func:`token_stats` and :func:`head_forward_kl`): both the student's and
the teacher's logits are divided by T before the divergence, as the SDFT authors' code does when it samples rollouts
at T; there is no T² factor. T = 1 skips the division, so the numbers are bit-identical to the untempered loss.
"""

import math
from collections.abc import Callable
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from selfdistill.config import Divergence, Support

DIVERGENCES = get_args(Divergence)
SUPPORTS = get_args(Support)


def _logprobs(logits_BTV: Tensor) -> Tensor:
    return torch.log_softmax(logits_BTV.float(), dim=-1)


def _gather(logp_BTV: Tensor, ids_BT: Tensor) -> Tensor:
    # Negative ids (padding, -100) read token 0; callers zero or mask those positions.
    return logp_BTV.gather(-1, ids_BT.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def _kl(loga_BTV: Tensor, logb_BTV: Tensor) -> Tensor:
    """KL(a || b) over the last axis, from log-probabilities. Bins where a has no mass add exactly 0."""
    # where() before the product, so 0 * (-inf - -inf) makes no NaN in the value or the gradient.
    log_ratio_BTV = torch.where(torch.isneginf(loga_BTV), 0.0, loga_BTV - logb_BTV)
    return (loga_BTV.exp() * log_ratio_BTV).sum(-1)


def _jsd(logp_BTV: Tensor, logq_BTV: Tensor, beta: float) -> Tensor:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    # The mixture formula vanishes at both ends (m becomes p, resp. q), so the endpoints are defined as the KLs.
    if beta == 0.0:
        return _kl(logq_BTV, logp_BTV)
    if beta == 1.0:
        return _kl(logp_BTV, logq_BTV)
    logm_BTV = torch.logaddexp(logq_BTV + math.log(beta), logp_BTV + math.log1p(-beta))
    return beta * _kl(logq_BTV, logm_BTV) + (1.0 - beta) * _kl(logp_BTV, logm_BTV)


def _divergence(logp_BTV: Tensor, logq_BTV: Tensor, divergence: str, beta: float) -> Tensor:
    if divergence == "forward":
        return _kl(logq_BTV, logp_BTV)
    if divergence == "reverse":
        return _kl(logp_BTV, logq_BTV)
    if divergence == "jsd":
        return _jsd(logp_BTV, logq_BTV, beta)
    raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")


def forward_kl(student_logits_BTV: Tensor, teacher_logits_BTV: Tensor) -> Tensor:
    """KL(q || p) = Σ_v q (log q - log p), loss_BT. Mass-covering; what SDFT ran for every reported result."""
    return _kl(_logprobs(teacher_logits_BTV), _logprobs(student_logits_BTV))


def reverse_kl(student_logits_BTV: Tensor, teacher_logits_BTV: Tensor) -> Tensor:
    """KL(p || q) = Σ_v p (log p - log q), loss_BT. Mode-seeking."""
    return _kl(_logprobs(student_logits_BTV), _logprobs(teacher_logits_BTV))


def jsd(student_logits_BTV: Tensor, teacher_logits_BTV: Tensor, beta: float = 0.5) -> Tensor:
    """Generalized Jensen-Shannon divergence, loss_BT, in TRL GKD's ``generalized_jsd_loss`` convention:

        m = β·q + (1-β)·p,    JSD_β = β·KL(q || m) + (1-β)·KL(p || m).

    β = 0 returns forward KL(q || p) and β = 1 reverse KL(p || q), exactly (special cases: the formula itself
    tends to 0 at both ends, so JSD_β is not continuous there). β = 0.5 is the symmetric JSD, at most log 2.
    """
    return _jsd(_logprobs(student_logits_BTV), _logprobs(teacher_logits_BTV), beta)


def topk_kl(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
    k: int,
    divergence: str = "forward",
    beta: float = 0.5,
) -> Tensor:
    """Divergence over K bins shared by p and q: the teacher's top-k tokens plus one tail bucket holding
    each distribution's remaining mass, loss_BT. ``divergence`` is "forward", "reverse" or "jsd" (with
    ``beta``, as in :func:`jsd`). With k >= V there is no tail and the value equals the full-vocab one.
    Coarse-graining never increases a divergence, so this is a lower bound on the full-vocab value.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    logp_BTV, logq_BTV = _logprobs(student_logits_BTV), _logprobs(teacher_logits_BTV)
    vocab = logq_BTV.shape[-1]
    top_BTk = logq_BTV.topk(min(k, vocab), dim=-1).indices
    logp_BTK, logq_BTK = logp_BTV.gather(-1, top_BTk), logq_BTV.gather(-1, top_BTk)
    if k < vocab:
        # Tail as a logsumexp over the complement, not log(1 - Σ top-k): exact even when the top-k hold
        # nearly all the mass, where the subtraction would cancel to 0 or below.
        in_top_BTV = torch.zeros_like(logq_BTV, dtype=torch.bool).scatter_(-1, top_BTk, True)
        tail_p_BT1 = logp_BTV.masked_fill(in_top_BTV, -math.inf).logsumexp(-1, keepdim=True)
        tail_q_BT1 = logq_BTV.masked_fill(in_top_BTV, -math.inf).logsumexp(-1, keepdim=True)
        logp_BTK = torch.cat([logp_BTK, tail_p_BT1], dim=-1)
        logq_BTK = torch.cat([logq_BTK, tail_q_BT1], dim=-1)
    return _divergence(logp_BTK, logq_BTK, divergence, beta)


def sampled_kl(student_logits_BTV: Tensor, teacher_logits_BTV: Tensor, tokens_BT: Tensor) -> Tensor:
    """log p(y_t) - log q(y_t) at the sampled token y_t, loss_BT: the single-sample estimate of REVERSE KL(p || q).

    Its expectation is KL(p || q) only if y_t ~ p, i.e. sampled from this student at temperature 1; a single
    value can be negative. Its direct gradient is ∇log p(y_t), whose expectation under y_t ~ p is zero: it is
    not a gradient of the KL. ``distill_loss(support="sampled")`` therefore attaches the score-function
    (REINFORCE) gradient sg[log p(y_t) - log q(y_t)]·∇log p(y_t) instead, per token (future tokens ignored).
    """
    logp_BT = _gather(_logprobs(student_logits_BTV), tokens_BT)
    return logp_BT - _gather(_logprobs(teacher_logits_BTV), tokens_BT)


def _sampled_surrogate(student_logits_BTV: Tensor, teacher_logits_BTV: Tensor, tokens_BT: Tensor) -> Tensor:
    kl_BT = sampled_kl(student_logits_BTV, teacher_logits_BTV, tokens_BT)
    reward_BT = kl_BT.detach()
    # Value is kl_BT; gradient is reward·∇log p(y), since kl_BT - reward_BT is 0 with gradient ∇log p(y).
    return reward_BT + reward_BT * (kl_BT - reward_BT)


def token_nll(logits_BTV: Tensor, targets_BT: Tensor) -> Tensor:
    """-log p(target), loss_BT. Negative targets (e.g. -100) give 0, like ``F.cross_entropy``'s ignore_index."""
    nll_BT = -_gather(_logprobs(logits_BTV), targets_BT)
    return torch.where(targets_BT >= 0, nll_BT, 0.0)


def masked_mean(loss_BT: Tensor, mask_BT: Tensor) -> Tensor:
    """Mean over the masked-in tokens of each sequence, then mean over sequences that have any, as a scalar.

    Sequences with an all-zero mask are left out of the outer mean; if every one is empty the result is 0
    and still connected to the graph, so ``backward()`` works on it.
    """
    keep_BT = mask_BT.bool()
    # where(), not a product: masked-out entries get exactly zero gradient even if they hold inf or NaN.
    kept_BT = torch.where(keep_BT, loss_BT.float(), 0.0)
    count_B = keep_BT.sum(-1)
    per_seq_B = kept_BT.sum(-1) / count_B.clamp(min=1)
    n_seqs = (count_B > 0).sum()
    return per_seq_B.sum() / n_seqs.clamp(min=1)


def _map_chunks(fn: Callable[..., Tensor], chunk_size: int, *tensors_BT_: Tensor) -> Tensor:
    """Apply fn to T-chunks and concatenate along T. Under grad each chunk is checkpointed, so only one
    chunk's fp32 [B, chunk, V] temporaries are alive at a time, in the forward and in the backward pass."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    use_checkpoint = torch.is_grad_enabled() and any(x.requires_grad for x in tensors_BT_)
    outs = []
    for chunk in zip(*(x.split(chunk_size, dim=1) for x in tensors_BT_), strict=True):
        outs.append(checkpoint(fn, *chunk, use_reentrant=False) if use_checkpoint else fn(*chunk))
    return torch.cat(outs, dim=1)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _tempered(fn: Callable[..., Tensor], temperature: float) -> Callable[..., Tensor]:
    """``fn`` of a chunk's student and teacher logits both divided by ``temperature`` (``fn`` itself at 1)."""
    if temperature == 1:
        return fn

    def tempered(s_BTV: Tensor, t_BTV: Tensor, tokens_BT: Tensor) -> Tensor:
        # Inside the chunk, so under checkpointing the scaled copies live one chunk at a time.
        return fn(s_BTV.float() / temperature, t_BTV.float() / temperature, tokens_BT)

    return tempered


def _check_shapes(student_logits_BTV: Tensor, teacher_logits_BTV: Tensor, tokens_BT: Tensor) -> None:
    if student_logits_BTV.shape != teacher_logits_BTV.shape:
        raise ValueError(
            f"student logits {tuple(student_logits_BTV.shape)} and teacher logits "
            f"{tuple(teacher_logits_BTV.shape)} must have the same [B, T, V] shape"
        )
    if tokens_BT.shape != student_logits_BTV.shape[:2]:
        raise ValueError(f"tokens {tuple(tokens_BT.shape)} must be [B, T] = {tuple(student_logits_BTV.shape[:2])}")


def distill_loss(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
    tokens_BT: Tensor,
    *,
    divergence: str = "forward",
    support: str = "full",
    k: int = 20,
    beta: float = 0.5,
    chunk_size: int = 64,
    temperature: float = 1.0,
) -> Tensor:
    """Per-token SDFT loss, loss_BT, with the teacher as a constant and memory bounded by T-chunks.

    ``support``: "full" (exact over V), "topk" (teacher's top-k + tail, see :func:`topk_kl`) or "sampled"
    (ignores ``divergence``: reverse KL estimated at the sampled ``tokens_BT`` with the REINFORCE gradient,
    see :func:`sampled_kl`). ``divergence``: "forward" KL(q||p), "reverse" KL(p||q), "jsd" (with ``beta``).
    ``temperature`` T: the divergence of softmax(student/T) and softmax(teacher/T); with "sampled" the estimate is
    then unbiased for rollouts sampled at T.
    """
    return _distill(
        student_logits_BTV,
        teacher_logits_BTV,
        tokens_BT,
        divergence,
        support,
        k,
        beta,
        chunk_size,
        stats=False,
        temperature=temperature,
    )[0]


def distill_loss_and_stats(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
    tokens_BT: Tensor,
    *,
    divergence: str = "forward",
    support: str = "full",
    k: int = 20,
    beta: float = 0.5,
    chunk_size: int = 64,
    temperature: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``distill_loss(...)`` and ``token_stats(...)`` of the same logits. For the default loss (forward KL over
    the full vocabulary) both come out of one pass over the logits, since the stats need the log-softmaxes the
    loss computes anyway; for any other loss the stats are a second, no-grad pass. At a ``temperature`` the stats
    describe the tempered distributions the loss compares."""
    loss_BT, stats_BT2 = _distill(
        student_logits_BTV,
        teacher_logits_BTV,
        tokens_BT,
        divergence,
        support,
        k,
        beta,
        chunk_size,
        stats=True,
        temperature=temperature,
    )
    if stats_BT2 is None:
        stats = token_stats(
            student_logits_BTV, teacher_logits_BTV, tokens_BT, chunk_size=chunk_size, temperature=temperature
        )
        return loss_BT, stats
    gap_BT, entropy_BT = stats_BT2.unbind(-1)
    return loss_BT, {"teacher_minus_student_logprob": gap_BT, "student_entropy": entropy_BT}


def _distill(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
    tokens_BT: Tensor,
    divergence: str,
    support: str,
    k: int,
    beta: float,
    chunk_size: int,
    stats: bool,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor | None]:
    """loss_BT, and with ``stats`` the fused (gap, entropy) ``[B, T, 2]`` where the loss computes them (else None)."""
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if support == "topk" and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check_temperature(temperature)
    _check_shapes(student_logits_BTV, teacher_logits_BTV, tokens_BT)

    def full(s_BTV: Tensor, t_BTV: Tensor, _tokens_BT: Tensor) -> Tensor:
        return _divergence(_logprobs(s_BTV), _logprobs(t_BTV), divergence, beta)

    def topk(s_BTV: Tensor, t_BTV: Tensor, _tokens_BT: Tensor) -> Tensor:
        return topk_kl(s_BTV, t_BTV, k, divergence, beta)

    if (support, divergence) == ("full", "forward"):
        loss_BT, stats_BT2 = _FusedForwardKL.apply(
            student_logits_BTV, teacher_logits_BTV.detach(), tokens_BT, chunk_size, stats, temperature
        )
        return loss_BT, stats_BT2 if stats else None
    fn = _tempered({"full": full, "topk": topk, "sampled": _sampled_surrogate}[support], temperature)
    return _map_chunks(fn, chunk_size, student_logits_BTV, teacher_logits_BTV.detach(), tokens_BT), None


class _FusedForwardKL(torch.autograd.Function):
    """KL(q || p) per token over the full vocabulary, with its gradient written out: d/ds KL = softmax(s) - q.

    The generic path (``_map_chunks`` with checkpointing) runs the chunk's log-softmaxes once in the forward pass,
    again in the backward pass, and then autograd's backward of each op. Here the backward is two softmaxes and a
    difference per chunk. Like the checkpointed path it saves only its inputs, so no fp32 ``[B, T, V]`` tensor
    outlives a chunk. With ``stats`` it also returns the no-grad diagnostics of ``token_stats`` from the same
    log-softmaxes, as a ``[B, T, 2]`` (gap, entropy) tensor; otherwise that output is empty. At a temperature T
    both logits are divided by T per chunk and the gradient is (softmax(s/T) - softmax(t/T)) / T.
    """

    @staticmethod
    def forward(ctx, s_BTV: Tensor, t_BTV: Tensor, tokens_BT: Tensor, chunk_size: int, stats: bool, temperature=1.0):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        kl, extra = [], []
        for s, t, y in zip(
            s_BTV.split(chunk_size, 1), t_BTV.split(chunk_size, 1), tokens_BT.split(chunk_size, 1), strict=True
        ):
            if temperature != 1:
                s, t = s.float() / temperature, t.float() / temperature
            logp_BTV, logq_BTV = _logprobs(s), _logprobs(t)
            kl.append(_kl(logq_BTV, logp_BTV))
            if stats:
                gap_BT = _gather(logq_BTV, y) - _gather(logp_BTV, y)
                entropy_BT = -_kl(logp_BTV, torch.zeros_like(logp_BTV))
                extra.append(torch.stack([gap_BT, entropy_BT], dim=-1))
        ctx.save_for_backward(s_BTV, t_BTV)
        ctx.chunk_size = chunk_size
        ctx.temperature = temperature
        stats_BT2 = torch.cat(extra, 1) if stats else s_BTV.new_empty(0, dtype=torch.float32)
        ctx.mark_non_differentiable(stats_BT2)
        return torch.cat(kl, 1), stats_BT2

    @staticmethod
    def backward(ctx, grad_BT: Tensor, _grad_stats: Tensor):
        s_BTV, t_BTV = ctx.saved_tensors
        grads = []
        for s, t, g in zip(
            s_BTV.split(ctx.chunk_size, 1),
            t_BTV.split(ctx.chunk_size, 1),
            grad_BT.split(ctx.chunk_size, 1),
            strict=True,
        ):
            # a zero upstream gradient (a masked position) gives exactly zero, even where softmax - q is not finite
            if (temperature := ctx.temperature) != 1:
                diff_BTV = torch.softmax(s.float() / temperature, -1) - torch.softmax(t.float() / temperature, -1)
                diff_BTV = diff_BTV / temperature
            else:
                diff_BTV = torch.softmax(s.float(), -1) - torch.softmax(t.float(), -1)
            grads.append(torch.where(g.unsqueeze(-1) == 0, 0.0, diff_BTV * g.unsqueeze(-1)).to(s_BTV.dtype))
        return torch.cat(grads, 1), None, None, None, None, None


def _stats_chunk(s_BTV: Tensor, t_BTV: Tensor, tokens_BT: Tensor) -> Tensor:
    logp_BTV = _logprobs(s_BTV)
    gap_BT = _gather(_logprobs(t_BTV), tokens_BT) - _gather(logp_BTV, tokens_BT)
    # KL against log-weights 0 is Σ p·log p, with 0·log 0 = 0 where the student puts no mass.
    entropy_BT = -_kl(logp_BTV, torch.zeros_like(logp_BTV))
    return torch.stack([gap_BT, entropy_BT], dim=-1)


@torch.no_grad()
def token_stats(
    student_logits_BTV: Tensor,
    teacher_logits_BTV: Tensor,
    tokens_BT: Tensor,
    *,
    chunk_size: int = 64,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """No-grad diagnostics, each [B, T] float32: "teacher_minus_student_logprob" = log q(y_t) - log p(y_t)
    (positive where the teacher likes the sampled token more) and "student_entropy" = -Σ_v p log p; p and q of the
    logits divided by ``temperature``."""
    _check_temperature(temperature)
    _check_shapes(student_logits_BTV, teacher_logits_BTV, tokens_BT)
    stats_fn = _tempered(_stats_chunk, temperature)
    stats_BT2 = _map_chunks(stats_fn, chunk_size, student_logits_BTV, teacher_logits_BTV, tokens_BT)
    gap_BT, entropy_BT = stats_BT2.unbind(-1)
    return {"teacher_minus_student_logprob": gap_BT, "student_entropy": entropy_BT}


# ---------------------------------------------------------------- the LM head inside the default loss


def masked_mean_weights(mask_BT: Tensor) -> Tensor:
    """The weights w_BT with Σ w·loss == ``masked_mean(loss, mask)``: 1 / (tokens in the row · non-empty rows)."""
    keep_BT = mask_BT.bool()
    count_B = keep_BT.sum(-1, keepdim=True)
    n_seqs = (count_B > 0).sum()
    return keep_BT.float() / count_B.clamp(min=1) / n_seqs.clamp(min=1)


def head_forward_kl(
    student_hidden_BTH: Tensor,
    student_head: torch.nn.Linear,
    teacher_hidden_BTH: Tensor,
    teacher_head: torch.nn.Linear,
    tokens_BT: Tensor,
    weights_BT: Tensor,
    *,
    chunk_size: int = 64,
    teacher_temperature: float = 1.0,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Σ_bt w_bt · KL(q_bt || p_bt) with the LM heads applied inside, ``chunk_size`` positions at a time.

    p = softmax(student_head(student_hidden) / T), q = softmax(teacher_head(teacher_hidden) / (T · τ)) with
    T = ``temperature`` (both logits divided by T, as in :func:`distill_loss`) and τ = ``teacher_temperature``; the
    teacher is a constant. The result equals ``(distill_loss(student_logits, teacher_logits, tokens) * w).sum()`` of
    the logits the heads would give, but no ``[B, T, V]`` tensor ever exists: memory is one chunk's ``[chunk, V]``
    whatever the completion length, and positions with w = 0 (masked) cost nothing. Under autocast the heads
    run in the autocast dtype, as they do inside the model. Returns the scalar loss and, without grad, the
    per-token KL ``[B, T]`` and the diagnostics of :func:`token_stats` (0 where w = 0).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not teacher_temperature > 0:
        raise ValueError(f"teacher_temperature must be > 0, got {teacher_temperature}")
    _check_temperature(temperature)
    if student_hidden_BTH.shape != teacher_hidden_BTH.shape:
        raise ValueError(
            f"student hidden {tuple(student_hidden_BTH.shape)} and teacher hidden "
            f"{tuple(teacher_hidden_BTH.shape)} must have the same [B, T, H] shape"
        )
    if tokens_BT.shape != student_hidden_BTH.shape[:2] or weights_BT.shape != tokens_BT.shape:
        raise ValueError(
            f"tokens {tuple(tokens_BT.shape)} and weights {tuple(weights_BT.shape)} must be [B, T] = "
            f"{tuple(student_hidden_BTH.shape[:2])}"
        )
    device = student_hidden_BTH.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    keep_N = weights_BT.reshape(-1).nonzero().squeeze(-1)
    loss, out_N3 = _HeadForwardKL.apply(
        student_hidden_BTH.reshape(-1, student_hidden_BTH.shape[-1])[keep_N],
        student_head.weight,
        student_head.bias,
        teacher_hidden_BTH.reshape(-1, teacher_hidden_BTH.shape[-1])[keep_N].detach(),
        teacher_head.weight.detach(),
        None if teacher_head.bias is None else teacher_head.bias.detach(),
        tokens_BT.reshape(-1)[keep_N],
        weights_BT.reshape(-1)[keep_N].float().detach(),
        chunk_size,
        dtype,
        teacher_temperature,
        temperature,
    )
    full_N3 = out_N3.new_zeros(tokens_BT.numel(), 3).index_copy_(0, keep_N, out_N3)
    kl_BT, gap_BT, entropy_BT = full_N3.reshape(*tokens_BT.shape, 3).unbind(-1)
    return loss, kl_BT, {"teacher_minus_student_logprob": gap_BT, "student_entropy": entropy_BT}


class _HeadForwardKL(torch.autograd.Function):
    """The loss of :func:`head_forward_kl` over N kept positions, its gradient computed in the forward pass.

    The loss is a weighted sum whose weights are known up front, so each chunk's gradient with respect to its
    logits, w · (softmax(s) − q), is formed at once and pushed through the head (into the hidden states and the
    head's weight and bias) before the next chunk is computed; backward only scales what was kept by the
    upstream gradient, in place. That is one head matmul forward and two backward per chunk, as in the model, and
    the teacher's one, with nothing vocabulary-sized saved but the head's own gradient. ``tau`` divides the teacher's
    logits, ``temp`` both (so the teacher's by tau · temp), and the logits' gradient gains a factor 1 / temp.
    """

    @staticmethod
    def forward(ctx, hs_NH, ws_VH, bs_V, ht_NH, wt_VH, bt_V, tokens_N, w_N, chunk_size: int, dtype, tau, temp=1.0):
        # Under autocast the matmuls run in its dtype as the model's head does; the student's weight is a leaf, so
        # autocast reuses the copy it cached in the model's forward. The teacher's is cast once, here.
        wt = wt_VH if dtype is None else wt_VH.to(dtype)
        bt = bt_V if bt_V is None or dtype is None else bt_V.to(dtype)
        grad_h = torch.empty_like(hs_NH)
        grad_w = torch.zeros(ws_VH.shape, dtype=torch.float32, device=ws_VH.device)
        grad_b = None if bs_V is None else torch.zeros(bs_V.shape, dtype=torch.float32, device=bs_V.device)
        loss = torch.zeros((), dtype=torch.float32, device=hs_NH.device)
        out, teacher_scale = [], tau * temp  # at temp = 1 exactly tau, so the untempered numbers are unchanged
        for start in range(0, hs_NH.shape[0], chunk_size):
            part = slice(start, start + chunk_size)
            h = hs_NH[part]
            s_nV = F.linear(h, ws_VH, bs_V)
            logp_nV = _logprobs(s_nV if temp == 1 else s_nV.float() / temp)
            t_nV = F.linear(ht_NH[part] if dtype is None else ht_NH[part].to(dtype), wt, bt)
            logq_nV = _logprobs(t_nV if teacher_scale == 1 else t_nV / teacher_scale)  # as before at temp = 1
            kl_n = _kl(logq_nV, logp_nV)
            loss += (kl_n * w_N[part]).sum()
            y = tokens_N[part].unsqueeze(0)
            gap_n = (_gather(logq_nV.unsqueeze(0), y) - _gather(logp_nV.unsqueeze(0), y)).squeeze(0)
            entropy_n = -_kl(logp_nV, torch.zeros_like(logp_nV))
            out.append(torch.stack([kl_n, gap_n, entropy_n], dim=-1))
            g_nV = (logp_nV.exp() - logq_nV.exp()) * w_N[part].unsqueeze(-1)
            if temp != 1:  # d(s / T)/ds
                g_nV = g_nV / temp
            if dtype is not None:
                g_nV, h = g_nV.to(dtype), h.to(dtype)
            grad_h[part] = torch.matmul(g_nV, ws_VH).to(hs_NH.dtype)
            grad_w += (g_nV.T @ h).float()
            if grad_b is not None:
                grad_b += g_nV.float().sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        out_N3 = torch.cat(out) if out else hs_NH.new_zeros(0, 3, dtype=torch.float32)
        ctx.mark_non_differentiable(out_N3)
        ctx.dtypes = (ws_VH.dtype, None if bs_V is None else bs_V.dtype)
        ctx.done = False
        return loss, out_N3

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_out: Tensor):
        if ctx.done:
            raise RuntimeError("the head loss's backward runs once (its gradients are scaled in place)")
        ctx.done = True
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        scaled = [g.mul_(grad_loss.to(g.dtype)) if g is not None else None for g in (grad_h, grad_w, grad_b)]
        return scaled[0], scaled[1].to(w_dtype), None if grad_b is None else scaled[2].to(b_dtype), *([None] * 9)
