"""The work of one packing-benchmark run: busy every GPU it was given for DURATION seconds.

    python gpu_work.py DURATION OUT.jsonl [--real]

With --real, a bf16 matrix-product loop runs on each visible CUDA device until
the duration has passed; otherwise it sleeps (the scheduling is the same).
Appends one JSON line: run id, the GPUs it saw, and when the work ran.
"""

from __future__ import annotations

import json
import os
import sys
import time


def busy(duration: float) -> None:
    import torch

    devices = list(range(torch.cuda.device_count()))
    mats = []
    for d in devices:
        a = torch.randn(8192, 8192, device=f"cuda:{d}", dtype=torch.bfloat16)
        mats.append((a, a.clone()))
    end = time.time() + duration
    while time.time() < end:
        for a, b in mats:
            torch.matmul(a, b)
        for d in devices:
            torch.cuda.synchronize(d)


def main() -> None:
    duration, out = float(sys.argv[1]), sys.argv[2]
    start = time.time()
    if "--real" in sys.argv:
        busy(duration)
    else:
        time.sleep(duration)
    record = {
        "run": os.environ.get("LAUNCHYARD_RUN_ID"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "start": start,
        "end": time.time(),
        "duration": duration,
    }
    with open(out, "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
