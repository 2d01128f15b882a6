"""Web UI page times with 100,000 runs in the database, on SQLite (and PostgreSQL).

    python benchmarks/ui_pages.py [--runs 100000] [--requests 50] [--postgres URL]

A real `launchyard server` process; its database is filled with N runs in one
queue (bulk insert through SQLAlchemy Core into the real schema: 5% queued,
a few in flight, the rest ended), then each page is requested over HTTP with a
session cookie, ``--requests`` times after a warm-up, and timed end to end.

The peer, measured in the same run against the same server and data, is the
plain JSON API list endpoint for the same queue and page size
(``GET /api/v1/entities/default/runs?queue=…&limit=50``).
Goal (issue 5): the queue page renders in under 200 ms at 100,000 runs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, select, text

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack, fresh_postgres_database, percentile

from launchyard.server.tables import ProjectRow, QueueRow, RunRow, UserRow

QUEUE = "bench"
BATCH = 10_000
ENDED = ("finished", "finished", "finished", "failed", "cancelled", "crashed")


def fill(database_url: str, runs: int) -> dict[str, int]:
    """Insert ``runs`` rows into the live server's database; returns counts per state."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        queue = conn.execute(select(QueueRow).where(QueueRow.name == QUEUE)).one()
        project_id = conn.execute(select(ProjectRow.id)).scalars().first()
        author_id = conn.execute(select(UserRow.id)).scalars().first()
    rng = random.Random(5)
    start = datetime.now(UTC) - timedelta(days=30)
    queued_from = runs - runs // 20  # the newest 5% are still waiting
    counts: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for i in range(runs):
            at = start + timedelta(seconds=i * 20)
            if i >= queued_from:
                state = "queued"
            elif i >= queued_from - 10:
                state = "running"
            else:
                state = rng.choice(ENDED)
            counts[state] = counts.get(state, 0) + 1
            ended = state not in ("queued", "running")
            rows.append(
                {
                    "id": f"b{i:09d}",
                    "name": f"b{i:09d}",
                    "entity_id": queue.entity_id,
                    "project_id": project_id,
                    "queue_id": queue.id,
                    "job_id": None,
                    "job_version": None,
                    "author_id": author_id,
                    "state": state,
                    "priority_rank": 2 if rng.random() < 0.9 else 1,
                    "image": None,
                    "command": ["python", "train.py", f"--seed={i}"],
                    "env": {},
                    "values": {"gpus": rng.choice([0, 1, 2])},
                    "run_config": {},
                    "resolved_config": {"gpus": 1},
                    "gpus": rng.choice([0, 1, 2]),
                    "attempt": 0 if state == "queued" else 1,
                    "queued_at": at,
                    "created_at": at,
                    "started_at": None if state == "queued" else at + timedelta(seconds=2),
                    "ended_at": at + timedelta(seconds=60) if ended else None,
                    "exit_code": (0 if state == "finished" else 1) if ended else None,
                    "reason": "exit code 0" if state == "finished" else None,
                    "agent_id": None,
                    "lease_token": None,
                    "lease_expires_at": None,
                    "gpu_ids": [],
                    "handle": None,
                    "cancel_requested": False,
                    "log_bytes": 0,
                    "log_chars": 0,
                    "idempotency_key": None,
                }
            )
            if len(rows) == BATCH:
                conn.execute(insert(RunRow.__table__), rows)
                rows = []
        if rows:
            conn.execute(insert(RunRow.__table__), rows)
    if engine.dialect.name == "postgresql":
        # What autovacuum does soon after a bulk load: planner statistics and the
        # visibility map (index-only scans for the state counts).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE runs"))
    engine.dispose()
    return counts


def timed(http: httpx.Client, url: str, n: int, **kwargs: Any) -> list[float]:
    for _ in range(3):  # warm caches and connections
        http.get(url, **kwargs).raise_for_status()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = http.get(url, **kwargs)
        times.append(time.perf_counter() - t0)
        response.raise_for_status()
    return times


def measure(database_url: str | None, runs: int, requests: int) -> dict[str, list[float]]:
    with Stack(database_url=database_url) as stack:
        c = stack.client()
        c.create_queue("default", {"name": QUEUE, "config": "gpus: 1\n"})
        # One real submission makes the project, the job and the user's rows.
        c.submit("default", {"queue": QUEUE, "project": "bench", "command": ["true"]})
        url = database_url or f"sqlite:///{stack.tmp / 'server' / 'launchyard.db'}"
        t0 = time.perf_counter()
        counts = fill(url, runs)
        print(f"  inserted {runs:,} runs in {time.perf_counter() - t0:.1f} s: {counts}")
        http = httpx.Client(base_url=stack.host, timeout=60, follow_redirects=True)
        http.post("/ui/login", data={"api_key": stack.key}).raise_for_status()
        page = http.get(f"/ui/e/default/queues/{QUEUE}").text
        after = page.split('href="?after=', 1)[1].split('"', 1)[0]
        bearer = {"Authorization": f"Bearer {stack.key}"}
        results = {
            "queue page": timed(http, f"/ui/e/default/queues/{QUEUE}", requests),
            "queue page, 2nd queued page": timed(
                http, f"/ui/e/default/queues/{QUEUE}?after={after}", requests
            ),
            "queue live update (JSON)": timed(
                http, f"/ui/api/e/default/queues/{QUEUE}/live", requests
            ),
            "queues overview": timed(http, "/ui/queues", requests),
            "run page": timed(http, f"/ui/runs/b{runs // 2:09d}", requests),
            "peer: API runs list, 50": timed(
                http,
                f"/api/v1/entities/default/runs?queue={QUEUE}&limit=50",
                requests,
                headers=bearer,
            ),
        }
        http.close()
        c.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("LAUNCHYARD_TEST_POSTGRES_URL"),
        help="postgresql+psycopg://… of a server to create a database on",
    )
    args = parser.parse_args()
    databases: dict[str, str | None] = {"sqlite": None}
    if args.postgres:
        databases["postgresql"] = fresh_postgres_database(args.postgres)
    results = {}
    for name, url in databases.items():
        print(f"{name}:")
        results[name] = measure(url, args.runs, args.requests)

    print(
        f"\nlaunchyard web UI — {args.runs:,} runs in one queue, {args.requests} requests each, "
        f"{os.cpu_count()} CPUs (ms, end to end over HTTP)"
    )
    header = f"{'':<30}" + "".join(f"{f'{n} p50':>16}{f'{n} p95':>16}" for n in results)
    print(header)
    print("-" * len(header))
    for label in next(iter(results.values())):
        line = f"{label:<30}"
        for timings in results.values():
            ms = [t * 1000 for t in timings[label]]
            line += f"{percentile(ms, 50):>16.1f}{percentile(ms, 95):>16.1f}"
        print(line)
    print("goal: the queue page under 200 ms at 100,000 runs")


if __name__ == "__main__":
    main()
