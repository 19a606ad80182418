"""Two ranks (gloo) where only rank 1 sees nan, in its loss and in one weight: every rank must
reach the same verdict, or the clean rank would wait in the next collective forever.
Usage: torchrun --nproc_per_node 2 finite_run.py OUT_DIR (writes rank<R>.json)"""
from __future__ import annotations

import json
import os
import sys

import torch

from dprl.train.finite import describe_non_finite, describe_non_finite_weights


def main() -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    layer = torch.nn.Linear(2, 2)
    if rank == 1:
        with torch.no_grad():
            layer.bias[0] = float("inf")
    result = {
        "values": describe_non_finite({"loss": float("nan") if rank == 1 else 0.5, "grad norm": None}),
        "weights": describe_non_finite_weights(layer),
        "clean": describe_non_finite({"loss": 0.5, "grad norm": 1.0}),
    }
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as fh:
        json.dump(result, fh)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
