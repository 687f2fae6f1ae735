"""Run several ``selfdistill`` commands in one process, or in one torchrun launch, so a test starts torch (and the
process group) once: ``runs.py ARGS... [--- ARGS...]...``. A command ``cut DIR STEP`` removes DIR's checkpoints
after STEP and its final model, as a kill after that step would leave the run (rank 0 does it, the others wait).
Stops with the first command's nonzero exit code."""

import os
import shutil
import sys
from pathlib import Path

import torch

from selfdistill.cli import end_process_group, main


def cut(run: Path, step: int) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        for ckpt in (run / "checkpoints").iterdir():
            if int(ckpt.name.split("-")[-1]) > step:
                shutil.rmtree(ckpt)
        (run / "model.safetensors").unlink()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


torch.set_num_threads(1)
commands, current = [], []
for arg in sys.argv[1:]:
    if arg == "---":
        commands.append(current)
        current = []
    else:
        current.append(arg)
commands.append(current)
for command in commands:
    if command[0] == "cut":
        cut(Path(command[1]), int(command[2]))
    elif code := main(command):
        end_process_group(finished=False)
        sys.exit(code)
end_process_group(finished=True)
