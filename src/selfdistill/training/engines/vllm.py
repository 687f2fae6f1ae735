"""The vLLM engine: a colocated, in-process ``vllm.LLM`` that samples token-id prompts and is handed the trainer's
weights after every optimizer step.

Setup writes the sampling model's current effective weights (LoRA merged out of place, see ``weights.py``) and
its config to a private temporary directory, and starts the engine there; nothing is downloaded. ``sync_weights``
streams the new tensors through ``collective_rpc("reload_weights", weights_iterator=..., is_checkpoint_format=True)``:
vLLM re-runs its per-layer post-load processing (on CPU it repacks every linear weight for oneDNN and drops the
original tensor, so a plain ``model.load_weights`` after start-up would fail or leave stale packed copies), then
the prefix cache is reset so no KV block computed with old weights is reused.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which is what lets a Python generator of
tensors reach the worker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from selfdistill.config import ConfigError
from selfdistill.training.engines.base import Rollout, Sampling, check_version, row_seeds
from selfdistill.training.engines.weights import hf_weights
from selfdistill.training.rollout import cut_at_eos, eos_ids

log = logging.getLogger(__name__)

_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # in-process: weights reach the worker without serialization
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


class EngineStartError(ConfigError):
    """vLLM refused the model (an architecture or shape it has no kernels for): a user error, exit code 2."""


class _QuietReload(logging.Filter):
    """A reload names no rotary buffer (there is none in a checkpoint); vLLM warns about it on every sync."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "RotaryEmbedding: Failed to load weights" not in record.getMessage()


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VLLMEngine:
    name = "vllm"

    def __init__(
        self,
        model: torch.nn.Module,
        tok,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int | None = None,
        max_num_seqs: int = 64,
        distributed: bool = False,
    ) -> None:
        for key, value in _ENV.items():
            os.environ.setdefault(key, value)
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # share the trainer's cores, no pinning
        from vllm import LLM

        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(_QuietReload())

        self.tok = tok
        self.version = 0
        self.dtype = _DTYPES[dtype]
        self._stop = eos_ids(tok, model)
        self._dir = Path(tempfile.mkdtemp(prefix="selfdistill-vllm-"))
        try:
            config = _write_checkpoint(model, self._dir, self.dtype)
            _check_cpu_head_size(config)
            length = max_model_len or min(int(getattr(config, "max_position_embeddings", 2048) or 2048), 4096)
            kwargs: dict = {}
            if not torch.cuda.is_available():
                kwargs["kv_cache_memory_bytes"] = 1 << 30
            else:
                kwargs["gpu_memory_utilization"] = 0.3
            if distributed:  # under torchrun: one engine per rank, on the process group torchrun set up
                kwargs["distributed_executor_backend"] = "external_launcher"
            self.llm = LLM(
                model=str(self._dir),
                skip_tokenizer_init=True,
                dtype=dtype,
                seed=seed,
                max_model_len=length,
                max_num_seqs=max_num_seqs,
                enforce_eager=True,
                logprobs_mode="processed_logprobs",  # log-probs of the distribution sampled from (temperature applied)
                generation_config="vllm",  # ignore the checkpoint's sampling defaults: ours are explicit
                **kwargs,
            )
        except Exception as err:
            shutil.rmtree(self._dir, ignore_errors=True)
            first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise EngineStartError(f"rollout: vllm cannot run this model ({type(err).__name__}: {first})") from err

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: Sampling,
        version: int | None = None,
        seeds: Sequence[int] | None = None,
    ) -> Rollout:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        check_version(self, version)
        n = sampling.num_generations
        params = dict(
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            top_k=0,
            max_tokens=sampling.max_new_tokens,
            min_tokens=sampling.min_new_tokens,
            stop_token_ids=self._stop,
            logprobs=0 if sampling.logprobs else None,  # the sampled token's log-prob only
            detokenize=False,
        )
        if sampling.greedy:
            per_row = [SamplingParams(**params)] * (len(prompts) * n)
        else:  # one request per row, each with its own seeded generator in vLLM's sampler (as the hf engine)
            if seeds is None:
                seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()
            elif len(seeds) != len(prompts):
                raise ValueError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts")
            per_row = [SamplingParams(**params, seed=seed) for seed in row_seeds(seeds, n)]
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts for _ in range(n)]
        outs = self.llm.generate(requests, per_row, use_tqdm=False)
        completions, index, logprobs, hit_cap = [], [], [], []
        stop = set(self._stop)
        for row, out in enumerate(outs):
            (c,) = out.outputs
            ids, capped = cut_at_eos(list(c.token_ids), stop)
            completions.append(ids)
            index.append(row // n)
            logprobs.append([float(c.logprobs[t][tok].logprob) for t, tok in enumerate(ids)] if c.logprobs else [])
            hit_cap.append(capped)
        return Rollout(completions, index, logprobs, hit_cap)

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module, version: int) -> None:
        weights = hf_weights(model, self.dtype, tied_head=True)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self.version = version

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        if shutil is not None and getattr(self, "_dir", None) is not None:  # (modules are gone at interpreter exit)
            shutil.rmtree(self._dir, ignore_errors=True)


def _write_checkpoint(model: torch.nn.Module, out: Path, dtype: torch.dtype):
    """config.json + model.safetensors of the effective weights: what vLLM starts from."""
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    config = base.config
    tensors = {name: t.contiguous().clone() for name, t in hf_weights(model, dtype)}
    save_file(tensors, str(out / "model.safetensors"))
    data = config.to_dict()
    data.pop("selfdistill", None)
    data["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(data, indent=2))
    return config


def check_model(model: torch.nn.Module) -> None:
    """Raise ValueError for a model this engine is known not to run here (before anything starts)."""
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    _check_cpu_head_size(base.config)


def _check_cpu_head_size(config) -> None:
    """vLLM's CPU attention has kernels for some head sizes only; it would fail at the first generate otherwise."""
    if torch.cuda.is_available():
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise ValueError(f"head size {head} is not one of vLLM's CPU attention sizes {sizes}")
