"""Run `selfdistill train ARGS...` in this process with a gradient communication hook on the DDP model that counts
the buckets it all-reduces, and write this rank's count per bucket to DIGEST_DIR/rank<R>.json at the end
(tests/test_distributed.py checks one all-reduce per optimizer step under --grad-accum)."""

import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from selfdistill.cli import end_process_group, main
from selfdistill.training.ranks import Ranks

out = Path(os.environ["DIGEST_DIR"])
rank = int(os.environ.get("RANK", "0"))
reduced: Counter = Counter()
wrap = Ranks.wrap


def counted(process_group, bucket):
    reduced[bucket.index()] += 1
    return default_hooks.allreduce_hook(process_group, bucket)


def wrap_and_count(self, model):
    wrapped = wrap(self, model)
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel), type(wrapped)
    wrapped.register_comm_hook(None, counted)
    return wrapped


Ranks.wrap = wrap_and_count
torch.set_num_threads(1)
code = main(sys.argv[1:])
(out / f"rank{rank}.json").write_text(json.dumps(reduced))
end_process_group(finished=code == 0)
sys.exit(code)
