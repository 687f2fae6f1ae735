"""What a run computed on: the CPU model, the device, the compute precision and the library versions.

    info = environment(device, bf16=True, processes=1)   # {"cpu": "AMD EPYC ...", "precision": "bf16 autocast", ...}

Numbers from different CPUs differ in their last digits, and a chaotic training run by far more (bf16 kernels
differ between CPU kinds), so every trained model records this beside its config, and benchmarks quote it.
"""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "transformers", "peft", "accelerate", "vllm")


def cpu_model() -> str:
    """lscpu's "Model name" with the CPU family and model numbers (the platform's processor string where lscpu is
    missing). The name alone can be "AMD EPYC" on machines of different generations."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return cpu_from_lscpu(out) or platform.processor() or "unknown"


def cpu_from_lscpu(text: str) -> str | None:
    """``"AMD EPYC (family 25 model 17)"`` from lscpu's output; None without a model name."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("Model name")
    if not name:
        return None
    family, model = fields.get("CPU family"), fields.get("Model")
    return f"{name} (family {family} model {model})" if family and model else name


def environment(device, bf16: bool, processes: int = 1) -> dict[str, object]:
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "device": str(device),
        "processes": processes,
        "precision": "bf16 autocast" if bf16 else "fp32",
    }
    if getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(device)
    for name in PACKAGES:
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            continue
    return info
