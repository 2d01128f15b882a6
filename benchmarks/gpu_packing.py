"""GPU packing: a seeded mix of runs asking for 1, 2 or 4 GPUs on a 4-GPU agent.

    python benchmarks/gpu_packing.py                 # 4 declared GPUs, runs sleep
    python benchmarks/gpu_packing.py --real          # GPUs from NVML, runs do CUDA matmuls

Reports makespan against the lower bound max(total GPU-seconds / 4, longest run),
GPU-time utilisation, the longest wait, per-GPU busy time sampled through NVML
(with --real), and checks that no two runs ever held the same GPU at once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from itertools import combinations
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack, transition_time

from launchyard.scheduling import RESERVE_AFTER_S

HERE = Path(__file__).resolve().parent
GPUS = 4


def make_mix(n: int = 60, seed: int = 7) -> list[tuple[int, float]]:
    """(gpus, seconds) per run: fixed for a seed, so every scheduler gets the same work."""
    rng = random.Random(seed)
    return [
        (rng.choices([1, 2, 4], weights=[5, 3, 2])[0], float(rng.randint(1, 8))) for _ in range(n)
    ]


class NvmlSampler(threading.Thread):
    """Samples each GPU's utilisation every 100 ms; busy seconds = samples > 0 × 0.1 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handles = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
        ]
        self.busy = [0.0] * len(self.handles)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for i, h in enumerate(self.handles):
                if self.nvml.nvmlDeviceGetUtilizationRates(h).gpu > 0:
                    self.busy[i] += 0.1


def add_packing_options(
    parser: argparse.ArgumentParser, margin_default: float | None, margin_help: str = ""
) -> None:
    """The scheduler settings of a packing run (here and in compare.py)."""
    parser.add_argument(
        "--reserve-after",
        type=float,
        default=RESERVE_AFTER_S,
        help="seconds before a blocked run holds a reservation (the server's default)",
    )
    parser.add_argument(
        "--limit-margin",
        type=float,
        default=margin_default,
        help=f"each run's time limit is its duration plus this many seconds {margin_help}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="CUDA work on NVML-found GPUs")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument(
        "--gpus",
        type=int,
        default=GPUS,
        help="GPUs of the machine (default 4); on fewer, every ask is capped at this many: "
        "a check of the machinery, not the packing figure",
    )
    add_packing_options(
        parser,
        margin_default=None,
        margin_help="(default 2, or 15 with --real for Python, PyTorch and CUDA start-up); "
        "a negative value: no limits",
    )
    args = parser.parse_args()

    gpus_total = args.gpus
    mix = [(min(g, gpus_total), d) for g, d in make_mix(args.runs)]
    margin = args.limit_margin if args.limit_margin is not None else (15.0 if args.real else 2.0)
    out = Path(os.environ.get("LAUNCHYARD_BENCH_OUT", "/tmp")) / f"packing-{os.getpid()}.jsonl"
    env = {"LAUNCHYARD_RESERVE_AFTER_S": str(args.reserve_after)}
    sampler = NvmlSampler() if args.real else None
    with Stack(env=env) as stack:
        c = stack.client()
        c.create_queue(
            "default",
            {
                "name": "pack",
                "config": "gpus: '{{gpus}}'\n",
                "variables": {
                    "gpus": {
                        "schema": {
                            "type": "integer",
                            "default": 1,
                            "minimum": 1,
                            "maximum": gpus_total,
                        }
                    }
                },
            },
        )
        command = [sys.executable, str(HERE / "gpu_work.py")]
        ids = []
        for gpus, seconds in mix:
            argv = [*command, str(seconds), str(out)] + (["--real"] if args.real else [])
            body: dict[str, object] = {"queue": "pack", "command": argv, "values": {"gpus": gpus}}
            if margin >= 0:
                body["time_limit"] = seconds + margin
            ids.append(c.submit("default", body)["id"])
        submitted_at = time.time()
        if sampler:
            sampler.start()
        declared = ",".join(str(i) for i in range(gpus_total))
        stack.agent("pack", jobs=gpus_total * 2, gpus="all" if args.real else declared)
        while c.list_runs("default", state=["queued", "claimed", "starting", "running"], limit=1)[
            "runs"
        ]:
            time.sleep(0.2)
        runs = [c.get_run(i) for i in ids]
        if sampler:
            sampler.stop.set()
        c.close()

    failed = [r for r in runs if r["state"] != "finished"]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    shared = [
        (a["run"], b["run"])
        for a, b in combinations(recs, 2)
        if a["start"] < b["end"]
        and b["start"] < a["end"]
        and set(a["gpus"].split(",")) & set(b["gpus"].split(","))
    ]
    first_start = min(transition_time(r, "running") for r in runs)
    last_end = max(transition_time(r, r["state"]) for r in runs)
    makespan = last_end - first_start
    nominal_bound = max(sum(g * d for g, d in mix) / gpus_total, max(d for _, d in mix))
    held = {r["id"]: transition_time(r, r["state"]) - transition_time(r, "running") for r in runs}
    gpus_of = {r["id"]: r["gpus"] for r in runs}
    gpu_s = sum(gpus_of[i] * s for i, s in held.items())
    occupied_bound = max(gpu_s / gpus_total, max(held.values()))
    utilisation = gpu_s / (gpus_total * makespan)
    longest_wait = max(transition_time(r, "running") - submitted_at for r in runs)

    print(
        f"\nGPU packing — {len(mix)} runs (1/2/4 GPUs, 1–8 s, seed 7) on {gpus_total} GPUs, "
        f"{'real CUDA work' if args.real else 'sleeps'}, "
        + (f"time limits of duration + {margin:g} s" if margin >= 0 else "no time limits")
    )
    rows = [
        ("makespan (s)", f"{makespan:.1f}"),
        ("lower bound, nominal durations (s)", f"{nominal_bound:.1f}"),
        ("lower bound, measured run times (s)", f"{occupied_bound:.1f}"),
        ("makespan / measured bound", f"{makespan / occupied_bound:.3f}"),
        ("GPU-time utilisation", f"{utilisation:.1%}"),
        ("longest wait submit→running (s)", f"{longest_wait:.1f}"),
        ("runs failed", str(len(failed))),
        ("pairs of runs sharing a GPU at once", str(len(shared))),
    ]
    if sampler:
        rows += [(f"GPU {i} busy (NVML, s)", f"{b:.1f}") for i, b in enumerate(sampler.busy)]
    for label, value in rows:
        print(f"{label:<40}{value:>12}")
    if shared or failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
