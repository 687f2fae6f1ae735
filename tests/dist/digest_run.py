"""Run `selfdistill train ARGS...` in this process and, after every teacher update, append this rank's digest of the
student's and the teacher's weights to DIGEST_DIR/rank<R>.jsonl (tests/test_distributed.py compares the ranks)."""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from selfdistill.training import teacher as teacher_module
from selfdistill.cli import end_process_group, main

out = Path(os.environ["DIGEST_DIR"])
rank = int(os.environ.get("RANK", "0"))
original = teacher_module.Teacher.update


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def update_and_record(self, student):
    original(self, student)
    row = {"student": _digest(p for p in student.parameters()), "teacher": _digest(self.state_dict().values())}
    with (out / f"rank{rank}.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


teacher_module.Teacher.update = update_and_record
torch.set_num_threads(1)
code = main(sys.argv[1:])
end_process_group(finished=code == 0)
sys.exit(code)
