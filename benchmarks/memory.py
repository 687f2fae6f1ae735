"""Peak memory of SDFT training against completion length: one fresh process per length, the same everything else.

    .venv/bin/python benchmarks/memory.py                      # the embedded model, 32 and 128 new tokens
    .venv/bin/python benchmarks/memory.py --lengths 32 64 128 --steps 3 --json benchmarks/results/memory.json

Every completion is exactly the given length (``min_new_tokens`` = ``max_new_tokens``), so the lengths are what
differs. Each run is its own process, so its peak RSS (``VmHWM``) is that run's alone; it includes the model
load. Memory does not depend on the machine's load, so this needs no idle machine (unlike a timing).
Prints peak RSS per length and the increase per 64 tokens, with the fp32 training state for scale (weights,
gradients, AdamW's two moments and the EMA teacher: five copies of the parameters).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, math, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from selfdistill.train import TrainConfig, train
from vs_trl import vm_hwm_mib
spec = json.loads(sys.argv[1])
out = train(TrainConfig(**{**spec, "output": Path(spec["output"])}))
hwm = vm_hwm_mib()
from safetensors import safe_open
with safe_open(str(Path(out) / "model.safetensors"), "pt") as f:
    n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
print(json.dumps({"peak_rss_mib": hwm, "parameters": n_params}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="record_json")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from selfdistill.environment import cpu_model

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            spec = {
                "data": args.data, "model": args.model, "method": "sdft", "output": str(Path(tmp) / str(length)),
                "max_steps": args.steps, "batch_size": args.batch_size, "max_new_tokens": length,
                "min_new_tokens": length, "precision": args.precision, "save_every": 0, "progress": False,
            }  # fmt: skip
            print(f"{length:5d} new tokens: training {args.steps} steps in a fresh process ...", flush=True)
            child = [sys.executable, "-c", CHILD, json.dumps(spec), str(Path(__file__).resolve().parent)]
            done = subprocess.run(child, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"memory.py: the run at {length} tokens failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append({"new_tokens": length, **row})
            print(f"{length:5d} new tokens: peak RSS {row['peak_rss_mib'] / 1024:.2f} GiB", flush=True)
    state_gib = 5 * 4 * results[0]["parameters"] / 2**30
    print(f"{cpu_model()} | {args.model} | batch {args.batch_size} | {args.precision} | {args.steps} steps")
    print(f"fp32 training state (weights, grads, AdamW m and v, EMA teacher): {state_gib:.2f} GiB")
    first, last = results[0], results[-1]
    if last["new_tokens"] != first["new_tokens"]:
        per64 = (last["peak_rss_mib"] - first["peak_rss_mib"]) / (last["new_tokens"] - first["new_tokens"]) * 64
        print(f"peak RSS grows {per64:.0f} MiB per 64 completion tokens ({first['new_tokens']} -> {last['new_tokens']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_model(), "settings": vars(args) | {"json": str(args.json)},
                                         "runs": results}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
