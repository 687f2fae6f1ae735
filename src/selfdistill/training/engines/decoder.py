"""A Llama-family decoder (Llama, SmolLM2, Qwen2/2.5, Qwen3) run from weights gathered once per rollout: the
forward of the decode engine (``engines/decode.py``).

    weights = gather(model, rows=32)                      # after ``unsupported(model)`` returned None
    cache = KVCache.empty(weights, rows=32, length=P + new_tokens)
    logits_BV = forward(weights, cache, ids_BP, positions_BP, keys_BS, at=0)        # prefill
    logits_BV = forward(weights, cache, ids_B1, positions_B1, keys_BS, at=P + t)    # one decode step

Shapes: B rows, T positions fed in one call (the prompt width P at prefill, 1 per decode step), N = B·T, S cache
positions, H hidden size, D head dim, Q query heads, K key-value heads, G = Q // K, V vocabulary.

A decode step at tens of rows is a few weight reads surrounded by many small ops, so the step is written to issue
as few ops as the kernels allow:
- q, k and v are one matmul (Qwen2's biases fused too), gate and up another; each layer's two RMSNorm gains are
  folded into the columns of the weight that reads the norm, so a norm is ``rms_norm`` without a gain;
- without autocast the residual adds ride in the matmul (``addmm`` with the residual as its C);
- rotary runs on q and k together as ``x·cos + swap(x)·sin±`` (one ``addcmul``), from a table made once;
- attention puts the G query heads of a key-value head into the rows of one product: keys and values are never
  repeated, and the KV cache is preallocated and written in place.
Arithmetic is the model's up to rounding (fused matmuls and folded gains sum in another order), and under autocast
it keeps HF's precisions: residual stream and norms in fp32, matmuls and attention in bf16.

The step has static shapes when ``kv_len`` is the whole cache (the mask hides what is not yet written) and makes no
host synchronization, so on CUDA it can be captured into a graph; on a CPU, slicing the cache to the positions
written so far (``kv_len``) saves reading the empty tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from selfdistill.training.prepack import MAX_ROWS, kernels_available

MODEL_TYPES = ("llama", "qwen2", "qwen3")
STATIC_ROPE = ("default", "linear", "llama3")
"""Rotary variants whose frequencies do not depend on the sequence length (dynamic ones rescale per call)."""
GENERATION_OPTIONS = (
    "repetition_penalty",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "sequence_bias",
    "exponential_decay_length_penalty",
)
"""generation_config entries that change what ``generate`` picks even when greedy; a model that sets one runs hf."""


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM under DDP's ``.module`` and peft's wrapper."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unsupported(model: torch.nn.Module) -> str | None:
    """Why this engine cannot run ``model`` exactly (None: it can)."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "peft_config"):
        config = next(iter(inner.peft_config.values()))
        if str(getattr(config, "peft_type", "")) not in ("LORA", "PeftType.LORA") or getattr(config, "use_dora", False):
            return "a peft adapter other than plain LoRA"
    base = base_model(model)
    config = base.config
    if config.model_type not in MODEL_TYPES:
        return f"model type {config.model_type!r} (supported: {', '.join(MODEL_TYPES)})"
    if getattr(base, "hf_quantizer", None) is not None:
        return "a quantized model"
    if config.hidden_act != "silu" or getattr(config, "mlp_bias", False):
        return f"an MLP with {config.hidden_act} activation or biases"
    if set(getattr(config, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        return "sliding-window attention"
    rope_type = getattr(base.model.rotary_emb, "rope_type", "default")
    if rope_type not in STATIC_ROPE:
        return f"rotary scaling {rope_type!r}"
    params = list(base.parameters())
    if any(type(p.data) is not Tensor for p in params) or len({p.device for p in params}) != 1:
        return "sharded or multi-device weights"
    generation = getattr(base, "generation_config", None)
    for option in GENERATION_OPTIONS:
        value = getattr(generation, option, None)
        if value not in (None, 1.0, 0, [], {}):
            return f"generation_config.{option}={value!r}"
    return None


@dataclass
class Linear:
    """``x @ W.T + b``, prepacked for a decode step's row count where the CPU kernels allow."""

    weight: Tensor
    """[out, in] in the compute dtype."""
    bias: Tensor | None
    """[out] or None."""
    packed: Tensor | None = None
    """The weight in the packed kernel's layout (MKL for fp32, oneDNN for bf16), or None: the stock kernel."""
    rows: int = 0
    """The row count the packed layout serves; other row counts (the prefill) run the stock kernel."""
    fuse_add: bool = False
    """Add the residual inside the matmul (``addmm``); off under autocast, which would round the residual to bf16."""

    def __call__(self, x_NI: Tensor, residual_NO: Tensor | None = None) -> Tensor:
        if self.packed is not None and x_NI.shape[0] == self.rows:
            x_NI = x_NI.to(self.weight.dtype).contiguous()
            if self.weight.dtype == torch.float32:
                y_NO = torch.ops.mkl._mkl_linear(x_NI, self.packed, self.weight, self.bias, self.rows)
            else:
                y_NO = torch.ops.mkldnn._linear_pointwise(x_NI, self.packed, self.bias, "none", [], "")
        elif residual_NO is not None and self.fuse_add and self.bias is None:
            return torch.addmm(residual_NO, x_NI, self.weight.t())
        else:
            y_NO = F.linear(x_NI, self.weight, self.bias)
        return y_NO if residual_NO is None else residual_NO + y_NO


@dataclass
class Layer:
    qkv: Linear
    """Input norm's gain folded in; output columns [q (Q·D) | k (K·D) | v (K·D)]."""
    o: Linear
    gate_up: Linear
    """Post-attention norm's gain folded in; output columns [gate (I) | up (I)]."""
    down: Linear
    q_norm: Tensor | None
    """Qwen3's per-head RMSNorm gains on q and k (before rotary), [D]; None for Llama and Qwen2."""
    k_norm: Tensor | None


@dataclass
class Weights:
    layers: list[Layer]
    embed: Tensor
    """[V, H], the model's own tensor (a lookup reads B rows of it)."""
    norm: Tensor
    """The final norm's gain [H]."""
    head: Linear
    inv_freq: Tensor
    """Rotary frequencies [D/2], the model's own (scaled variants included)."""
    rope_scale: float
    """The rotary embedding's attention scaling (1 but for some scaled variants)."""
    eps: float
    """RMSNorm epsilon."""
    num_heads: int
    """Q."""
    num_kv_heads: int
    """K."""
    head_dim: int
    """D."""
    scale: float
    """Attention's softmax scale."""
    dtype: torch.dtype
    """What matmuls and attention compute in (bf16 under bf16 autocast); the KV cache holds it."""

    @property
    def device(self) -> torch.device:
        return self.embed.device


@dataclass
class KVCache:
    keys: Tensor
    """[layers, B, K, S, D]."""
    values: Tensor

    @classmethod
    def empty(cls, w: Weights, rows: int, length: int, dtype: torch.dtype) -> KVCache:
        shape = (len(w.layers), rows, w.num_kv_heads, length, w.head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=w.device), torch.zeros(shape, dtype=dtype, device=w.device))


def compute_dtype(base: torch.nn.Module) -> tuple[torch.dtype, bool]:
    """The dtype matmuls run in here (bf16 under bf16 autocast, else the weights'), and whether autocast is on."""
    param = next(base.parameters())
    device_type = param.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type), True
    return param.dtype, False


@torch.no_grad()
def gather(model: torch.nn.Module, rows: int, prepack: str = "auto") -> Weights:
    """The weights ``forward`` runs on, from ``model``'s current (effective: LoRA merged in) weights."""
    from selfdistill.training.engines.weights import hf_weights

    base = base_model(model)
    config = base.config
    dtype, autocast_on = compute_dtype(base)
    named = dict(hf_weights(model, tied_head=True))
    pack = {"auto": (torch.bfloat16,), "on": (torch.float32, torch.bfloat16), "off": ()}[prepack]
    pack_now = dtype in pack and kernels_available(dtype) and rows <= MAX_ROWS and base.device.type == "cpu"

    def linear(weight: Tensor, bias: Tensor | None = None, gain: Tensor | None = None) -> Linear:
        weight = weight.float() * gain.float() if gain is not None else weight
        weight = weight.to(dtype).contiguous()
        bias = None if bias is None else bias.to(dtype)
        packed = None
        if pack_now:
            reorder = torch.ops.mkl._mkl_reorder_linear_weight
            packed = (reorder if dtype == torch.float32 else torch.ops.mkldnn._reorder_linear_weight)(weight, rows)
        return Linear(weight, bias, packed, rows, fuse_add=not autocast_on)

    layers = []
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."

        def get(name: str, prefix: str = p) -> Tensor | None:
            return named.get(prefix + name)

        biases = [get(f"self_attn.{n}_proj.bias") for n in "qkv"]
        qkv_bias = None if biases[0] is None else torch.cat(biases)
        qkv = torch.cat([get(f"self_attn.{n}_proj.weight") for n in "qkv"])
        gate_up = torch.cat([get("mlp.gate_proj.weight"), get("mlp.up_proj.weight")])
        layers.append(
            Layer(
                qkv=linear(qkv, qkv_bias, gain=get("input_layernorm.weight")),
                o=linear(get("self_attn.o_proj.weight"), get("self_attn.o_proj.bias")),
                gate_up=linear(gate_up, gain=get("post_attention_layernorm.weight")),
                down=linear(get("mlp.down_proj.weight")),
                q_norm=get("self_attn.q_norm.weight"),
                k_norm=get("self_attn.k_norm.weight"),
            )
        )
    attn = base.model.layers[0].self_attn
    rotary = base.model.rotary_emb
    return Weights(
        layers=layers,
        embed=named["model.embed_tokens.weight"],
        norm=named["model.norm.weight"],
        head=linear(named["lm_head.weight"], named.get("lm_head.bias")),
        inv_freq=rotary.inv_freq.float(),
        rope_scale=float(getattr(rotary, "attention_scaling", 1.0)),
        eps=float(config.rms_norm_eps),
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=attn.head_dim,
        scale=float(attn.scaling),
        dtype=dtype,
    )


def rope_table(w: Weights, length: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and signed sin ``[length, D]`` for positions 0 … length − 1, computed as HF's rotary embedding does
    (fp32, then the residual stream's dtype); the sin's first half is negated so that rotate_half(x)·sin =
    swap(x)·sin±."""
    freqs_SF = torch.arange(length, device=w.device).float()[:, None] * w.inv_freq[None, :]
    emb_SD = torch.cat((freqs_SF, freqs_SF), dim=-1)
    cos_SD, sin_SD = emb_SD.cos() * w.rope_scale, emb_SD.sin() * w.rope_scale
    half = w.head_dim // 2
    sin_SD = torch.cat((-sin_SD[:, :half], sin_SD[:, half:]), dim=-1)
    return cos_SD.to(dtype), sin_SD.to(dtype)


def attention_mask(keys_BS: Tensor, at: int | Tensor, length: int) -> Tensor:
    """``[B, 1, T, S]``: query t (column ``at + t``) sees the written, real keys at or before it, and always itself
    (a left pad's query would otherwise see nothing, and its NaN would reach the real rows through the values)."""
    cols_S = torch.arange(keys_BS.shape[1], device=keys_BS.device)
    query_T = at + torch.arange(length, device=keys_BS.device)
    causal_TS = cols_S[None, :] <= query_T[:, None]
    self_TS = cols_S[None, :] == query_T[:, None]
    return ((causal_TS[None] & keys_BS[:, None, :]) | self_TS[None])[:, None]


def attend(w: Weights, q_BTQD: Tensor, keys_BKSD: Tensor, values_BKSD: Tensor, mask_B1TS: Tensor) -> Tensor:
    """Grouped-query attention with the G query heads of each key-value head as rows of one product; [N, Q·D]."""
    B, T, Q, D = q_BTQD.shape
    K, G = w.num_kv_heads, Q // w.num_kv_heads
    q_BKRD = q_BTQD.view(B, T, K, G, D).permute(0, 2, 3, 1, 4).reshape(B, K, G * T, D)
    if T > 1:  # row g·T + t of a group is query t
        mask_B1TS = mask_B1TS[:, :, None].expand(B, 1, G, T, -1).reshape(B, 1, G * T, -1)
    out_BKRD = F.scaled_dot_product_attention(
        q_BKRD, keys_BKSD.to(q_BKRD.dtype), values_BKSD.to(q_BKRD.dtype), attn_mask=mask_B1TS, scale=w.scale
    )
    return out_BKRD.view(B, K, G, T, D).permute(0, 3, 1, 2, 4).reshape(B * T, Q * D)


def forward(
    w: Weights,
    cache: KVCache,
    rope: tuple[Tensor, Tensor],
    ids_BT: Tensor,
    positions_BT: Tensor,
    keys_BS: Tensor,
    at: int | Tensor,
    kv_len: int | None = None,
) -> Tensor:
    """Run ``ids_BT`` (cache columns ``at`` … ``at + T − 1``, rotary positions ``positions_BT``), write their keys
    and values into ``cache``, and return the logits of each row's last position ``[B, V]``. ``keys_BS``: which
    cache columns hold real tokens (those being fed included); ``kv_len``: attend over the first ``kv_len``
    columns only (None: all of them). With ``at`` a device tensor and ``kv_len`` None every shape is static and
    nothing reads back to the host: the step a CUDA graph can capture."""
    B, T = ids_BT.shape
    Q, K, D, H = w.num_heads, w.num_kv_heads, w.head_dim, w.embed.shape[1]
    S = cache.keys.shape[3] if kv_len is None else kv_len
    cos_SD, sin_SD = rope
    cos_N1D, sin_N1D = cos_SD[positions_BT].view(B * T, 1, D), sin_SD[positions_BT].view(B * T, 1, D)
    mask_B1TS = attention_mask(keys_BS[:, :S], at, T)
    h_NH = F.embedding(ids_BT, w.embed).view(B * T, H)
    for i, layer in enumerate(w.layers):
        qkv_NC = layer.qkv(F.rms_norm(h_NH, (H,), None, w.eps))
        qk_NRD = qkv_NC[:, : (Q + K) * D].view(B * T, Q + K, D)
        if layer.q_norm is not None:
            q_NQD = F.rms_norm(qk_NRD[:, :Q].float(), (D,), layer.q_norm.float(), w.eps)
            k_NKD = F.rms_norm(qk_NRD[:, Q:].float(), (D,), layer.k_norm.float(), w.eps)
            qk_NRD = torch.cat((q_NQD, k_NKD), dim=1).to(cos_N1D.dtype)
        swapped_NRD = torch.cat((qk_NRD[..., D // 2 :], qk_NRD[..., : D // 2]), dim=-1)
        qk_NRD = torch.addcmul(qk_NRD * cos_N1D, swapped_NRD, sin_N1D)
        k_BKTD = qk_NRD[:, Q:].view(B, T, K, D).transpose(1, 2)
        v_BKTD = qkv_NC[:, (Q + K) * D :].view(B, T, K, D).transpose(1, 2)
        if isinstance(at, Tensor):
            cols_T = at + torch.arange(T, device=at.device)
            cache.keys[i].index_copy_(2, cols_T, k_BKTD.to(cache.keys.dtype))
            cache.values[i].index_copy_(2, cols_T, v_BKTD.to(cache.values.dtype))
        else:
            cache.keys[i, :, :, at : at + T] = k_BKTD
            cache.values[i, :, :, at : at + T] = v_BKTD
        q_BTQD = qk_NRD[:, :Q].view(B, T, Q, D)
        attn_NC = attend(w, q_BTQD, cache.keys[i, :, :, :S], cache.values[i, :, :, :S], mask_B1TS)
        h_NH = layer.o(attn_NC, h_NH)
        gate_up_NC = layer.gate_up(F.rms_norm(h_NH, (H,), None, w.eps))
        gate_NI, up_NI = gate_up_NC.chunk(2, dim=-1)
        h_NH = layer.down(F.silu(gate_NI) * up_NI, h_NH)
    last_BH = h_NH.view(B, T, H)[:, -1]
    return w.head(F.rms_norm(last_BH, (H,), w.norm, w.eps))
