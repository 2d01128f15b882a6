"""Dispatch latency and throughput of launchyard's local backend, on SQLite and PostgreSQL.

    python benchmarks/dispatch.py [--latency-runs 200] [--runs 1000] [--postgres URL]

1. submit→running latency with an idle agent (one run at a time, `true`),
   measured from the server's own transition times;
2. throughput: N trivial runs submitted by 4 client threads and completed by one
   agent with `-j 8` (submissions/s, completions/s); N more through the batch
   endpoint, 250 a request (a sweep), timed at submission.

The peer, measured in the same run on the same machine, is a bare
`subprocess.Popen` of the same command: the floor that any launcher pays.
Goals (issue 2): p50 < 50 ms, p99 < 150 ms, 1,000 runs submitted in < 2 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack, fresh_postgres_database, percentile, summary_ms, transition_time

QUEUE = {"name": "bench", "resource": "local", "config": "gpus: 0\n"}


def measure(database_url: str | None, latency_runs: int, runs: int) -> dict[str, float]:
    with Stack(database_url=database_url) as stack:
        c = stack.client()
        c.create_queue("default", QUEUE)
        stack.agent("bench", jobs=8)
        latencies = []
        for _ in range(latency_runs):
            run = c.submit("default", {"queue": "bench", "command": ["true"]})
            while True:
                shown = c.get_run(run["id"])
                if shown["state"] in ("finished", "failed", "crashed"):
                    break
                time.sleep(0.005)
            latencies.append(transition_time(shown, "running") - transition_time(shown, "queued"))

        # N runs through the batch endpoint (a sweep), 250 a request, with the agent idle,
        # into a queue no agent serves: these stay queued; only their submission is timed.
        c.create_queue("default", {**QUEUE, "name": "sweep"})
        body = {"queue": "sweep", "command": ["true"]}
        batch_start = time.monotonic()
        for _ in range(0, runs, 250):
            c.submit_many("default", [body] * 250)
        batch_submitted = time.monotonic() - batch_start

        def submit_many(n: int) -> list[str]:
            client = stack.client()
            ids = [
                client.submit("default", {"queue": "bench", "command": ["true"]})["id"]
                for _ in range(n)
            ]
            client.close()
            return ids

        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(submit_many, [runs // 4] * 4))
        submitted = time.monotonic() - start
        total = sum(len(b) for b in batches)
        while True:
            page = c.list_runs(
                "default",
                queue="bench",
                state=["queued", "claimed", "starting", "running"],
                limit=1,
            )
            if not page["runs"]:
                break
            time.sleep(0.05)
        completed = time.monotonic() - start
        c.close()
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "submit_s": submitted,
        "submit_per_s": runs / submitted,
        "batch_submit_s": batch_submitted,
        "complete_per_s": total / completed,
        "latency_summary": summary_ms(latencies),  # type: ignore[dict-item]
    }


def popen_peer(n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.Popen(["true"]).wait()
        times.append(time.perf_counter() - start)
    return {"p50_ms": percentile(times, 50) * 1000, "p99_ms": percentile(times, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("LAUNCHYARD_TEST_POSTGRES_URL"),
        help="postgresql+psycopg://… of a server to create a database on",
    )
    args = parser.parse_args()

    results = {"sqlite": measure(None, args.latency_runs, args.runs)}
    if args.postgres:
        results["postgresql"] = measure(
            fresh_postgres_database(args.postgres), args.latency_runs, args.runs
        )
    peer = popen_peer(args.latency_runs)

    print(
        f"\nlaunchyard dispatch — {os.cpu_count()} CPUs, {args.latency_runs} latency runs, "
        f"{args.runs} throughput runs"
    )
    header = f"{'':<36}" + "".join(f"{name:>14}" for name in results) + f"{'Popen peer':>14}"
    print(header)
    print("-" * len(header))
    rows = [
        ("submit→running p50 (ms)", "p50_ms", "{:.1f}"),
        ("submit→running p99 (ms)", "p99_ms", "{:.1f}"),
        (f"{args.runs} submits, 4 clients (s)", "submit_s", "{:.2f}"),
        ("submissions/s, 4 clients", "submit_per_s", "{:.0f}"),
        (f"{args.runs} submits, batches of 250 (s)", "batch_submit_s", "{:.2f}"),
        (f"completions/s ({args.runs} runs, -j 8)", "complete_per_s", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        line = f"{label:<36}" + "".join(f"{fmt.format(r[key]):>14}" for r in results.values())
        line += f"{fmt.format(peer[key]):>14}" if key in peer else f"{'—':>14}"
        print(line)
    print("goals: p50 < 50 ms, p99 < 150 ms, 1,000 submits < 2 s")


if __name__ == "__main__":
    main()
