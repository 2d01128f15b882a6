"""Load: 50 concurrent clients submitting while 4 agents claim, for a bounded time.

Zero errors, zero lost runs, zero runs executed twice; latency percentiles go to the
reliability report. LAUNCHYARD_LOAD_S sets the duration (default 20 s; 60 for the
full minute of the issue).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

from tests.e2e.conftest import LiveServer, wait_until

from launchyard.errors import LaunchyardError
from reliability.conftest import REPORT

CLIENTS = 50
AGENTS = 4
THINK_S = 2.0  # each client submits about every 2 s: about 25 submissions/s in all


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q / 100 * len(ordered)), len(ordered) - 1)]


def test_fifty_clients_and_four_agents(live_server: LiveServer, tmp_path: Path) -> None:
    duration = float(os.environ.get("LAUNCHYARD_LOAD_S", "20"))
    marker = tmp_path / "executions.txt"
    live_server.client().create_queue("default", {"name": "q", "config": "gpus: 0\n"})
    for n in range(AGENTS):
        live_server.start_agent("-q", "q", "-j", "8", "--gpus", "none", name=f"load-{n}")
    for n in range(AGENTS):
        live_server.wait_agent_ready(f"load-{n}")

    acked: list[str] = []
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    command = ["sh", "-c", f'echo "$LAUNCHYARD_RUN_ID" >> {marker}']

    def client(n: int) -> None:
        c = live_server.client(key=live_server.key)
        time.sleep(n * THINK_S / CLIENTS)  # spread the clients over the first interval
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                run = c.submit("default", {"queue": "q", "command": command})
            except LaunchyardError as exc:
                with lock:
                    errors.append(str(exc))
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
                acked.append(run["id"])
            time.sleep(THINK_S)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = live_server.client()

    def drained() -> bool:
        active = ["queued", "claimed", "starting", "running"]
        return not c.list_runs("default", state=active, limit=1)["runs"]

    wait_until(drained, 180, interval_s=0.5)
    executions = Counter(marker.read_text().split()) if marker.exists() else Counter()
    states = Counter(r["state"] for r in _all_runs(c))
    lost = [i for i in acked if executions[i] == 0]
    duplicated = [i for i, n in executions.items() if n > 1]
    REPORT["load: concurrent clients"] = CLIENTS
    REPORT["load: agents claiming"] = AGENTS
    REPORT["load: runs submitted"] += len(acked)
    REPORT["load: client errors"] += len(errors)
    REPORT["load: runs lost"] += len(lost)
    REPORT["load: runs executed twice"] += len(duplicated)
    REPORT["load: submit latency p50 (ms)"] = round(percentile(latencies, 50) * 1000)
    REPORT["load: submit latency p99 (ms)"] = round(percentile(latencies, 99) * 1000)
    assert errors == []
    assert len(set(acked)) == len(acked)
    assert states == {"finished": len(acked)}
    assert lost == [] and duplicated == []


def _all_runs(c) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    runs, cursor = [], None
    while True:
        page = c.list_runs("default", limit=1000, before=cursor)
        runs.extend(page["runs"])
        cursor = page["next_cursor"]
        if cursor is None:
            return runs
