"""The engines launchyard is measured against, each driven through its own tools.

- **Slurm**: ``sbatch`` submits (GPUs as ``--gres=gpu:N``), the job-completion log
  (``JobCompType=jobcomp/filetxt``) says what ended, ``sdiag`` how long a scheduling
  cycle takes. Started by ``.ci/services/slurm.sh``; found through ``SLURM_CONF``.
- **Ray**: Ray's ``JobSubmissionClient`` (what ``ray job submit`` calls) against a local
  cluster declaring 4 GPUs and 16 CPUs; ``entrypoint_num_gpus`` makes Ray hold the GPUs
  and set ``CUDA_VISIBLE_DEVICES``; ``entrypoint_num_cpus=1`` makes trivial jobs wait for a
  slot instead of all starting at once. Started by ``.ci/services/ray.sh``; found through
  ``LAUNCHYARD_TEST_RAY_ADDRESS``.
- **launchyard** through its HTTP API (real ``launchyard server`` and ``launch-agent``
  processes from ``harness.Stack``), and the **concurrency-limit only** agent: the same
  launchyard, but a ``gpus: 0`` queue on a ``-j 4`` agent with no GPUs, which is what a
  plain polling agent does: four at a time, whatever they ask for.

Every engine runs the same argv, and the timings come from the run itself (it writes
``$EPOCHREALTIME``, or a ``gpu_work.py`` record): no engine's own reporting delay, fast
or slow, enters the figures.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack  # noqa: E402

ACTIVE_STATES = ("queued", "claimed", "starting", "running")
SLURM_TIME_LIMIT_MIN = 1
"""Slurm counts time limits in minutes: every run of the mix (1–8 s) fits in the smallest."""


@dataclass(frozen=True)
class Submitted:
    tag: str
    engine_id: str
    at: float
    """Wall clock just before the submit call (the run's own clock is the same machine's)."""


def rss_kib(pid: int) -> int:
    """Resident memory of one process (VmRSS in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Engine:
    """Submit runs and count how many of them the engine says have ended."""

    name = "?"

    def submit(
        self, tag: str, argv: Sequence[str], gpus: int = 0, limit_s: float | None = None
    ) -> Submitted:
        """``limit_s``: the run's time limit, in whatever units the engine has."""
        raise NotImplementedError

    def ended(self, ids: Collection[str]) -> int:
        raise NotImplementedError

    def submit_many(self, jobs: Sequence[tuple[Any, ...]], threads: int = 4) -> list[Submitted]:
        """Submit from ``threads`` client threads at once (in order when ``threads`` is 1)."""
        if threads <= 1:
            return [self.submit(*job) for job in jobs]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda job: self.submit(*job), jobs))

    def wait_ended(self, ids: Collection[str], timeout_s: float, every_s: float = 0.05) -> float:
        """Wall clock when the engine counts every one of ``ids`` as ended."""
        deadline = time.monotonic() + timeout_s
        while self.ended(ids) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: {self.ended(ids)} of {len(ids)} ended after {timeout_s:.0f} s"
                )
            time.sleep(every_s)
        return time.time()

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Return once the engine has nothing left to tidy up after the runs it ended."""


class Launchyard(Engine):
    """A queue on a running Stack; ``ended`` reads the server's own /metrics."""

    def __init__(self, stack: Stack, queue: str, *, gpu_variable: bool, name: str) -> None:
        self.stack, self.queue, self.gpu_variable, self.name = stack, queue, gpu_variable, name
        self._local = threading.local()

    def _client(self):  # type: ignore[no-untyped-def]
        if not hasattr(self._local, "client"):
            self._local.client = self.stack.client()
        return self._local.client

    def submit(
        self, tag: str, argv: Sequence[str], gpus: int = 0, limit_s: float | None = None
    ) -> Submitted:
        body: dict[str, object] = {"queue": self.queue, "command": list(argv), "name": tag}
        if self.gpu_variable:
            body["values"] = {"gpus": gpus}
        if limit_s is not None:
            body["time_limit"] = limit_s
        at = time.time()
        run = self._client().submit("default", body)
        return Submitted(tag, run["id"], at)

    def ended(self, ids: Collection[str]) -> int:
        """How many of ``ids`` ended, as a Grafana scrape of /metrics sees it: every run of
        this queue (a queue of its own per measurement) not queued or in flight."""
        counts = queue_counts(self.metrics(), self.queue)
        return len(ids) - sum(counts.get(state, 0) for state in ACTIVE_STATES)

    def metrics(self) -> str:
        reply = self._client()._http.get("/metrics")
        reply.raise_for_status()
        return str(reply.text)


_SAMPLE = re.compile(r"^launchyard_queue_runs\{([^}]*)\}\s+([0-9.e+]+)$", re.M)


def queue_counts(metrics_text: str, queue: str) -> dict[str, int]:
    """``launchyard_queue_runs{queue=…, state=…}`` samples of one queue, by state."""
    out: dict[str, int] = {}
    for labels, value in _SAMPLE.findall(metrics_text):
        parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if parsed.get("queue") == queue:
            out[parsed["state"]] = int(float(value))
    return out


def launchyard_stack(reserve_after_s: float | None = None) -> Stack:
    env = {} if reserve_after_s is None else {"LAUNCHYARD_RESERVE_AFTER_S": str(reserve_after_s)}
    return Stack(env=env)


GPU_QUEUE_CONFIG = "gpus: '{{gpus}}'\n"


def gpu_queue(name: str, gpus: int) -> dict[str, object]:
    """A local queue whose runs ask for ``{{gpus}}`` (1..gpus) GPUs."""
    return {
        "name": name,
        "resource": "local",
        "config": GPU_QUEUE_CONFIG,
        "variables": {
            "gpus": {"schema": {"type": "integer", "default": 1, "minimum": 0, "maximum": gpus}}
        },
    }


def plain_queue(name: str) -> dict[str, object]:
    """A local queue with no GPU accounting: every run asks for none."""
    return {"name": name, "resource": "local", "config": "gpus: 0\n"}


class Slurm(Engine):
    """sbatch / the job-completion log / sdiag of the cluster named by ``SLURM_CONF``."""

    name = "Slurm"

    def __init__(self, conf: str) -> None:
        self.conf = conf
        text = Path(conf).read_text()
        self.jobcomp = Path(_conf_value(text, "JobCompLoc"))
        self.ctld_pid_file = Path(_conf_value(text, "SlurmctldPidFile"))
        self.slurmd_pid_file = Path(_conf_value(text, "SlurmdPidFile"))
        self.env = {**os.environ, "SLURM_CONF": conf}
        self._offset = 0
        self._ended: set[str] = set()
        self._lock = threading.Lock()

    def submit(
        self,
        tag: str,
        argv: Sequence[str],
        gpus: int = 0,
        limit_s: float | None = None,
        *,
        time_min: int | None = None,
        array: int = 0,
    ) -> Submitted:
        if time_min is None:  # Slurm counts limits in whole minutes
            time_min = max(SLURM_TIME_LIMIT_MIN, math.ceil((limit_s or 0) / 60))
        cmd = [
            "sbatch",
            "--parsable",
            f"--job-name={tag}",
            "--output=/dev/null",
            f"--time={time_min}",
            "--wrap",
            "exec " + shlex.join(argv),
        ]
        if gpus:
            cmd.append(f"--gres=gpu:{gpus}")
        if array:
            cmd.append(f"--array=0-{array - 1}")
        at = time.time()
        # The tag reaches the job through sbatch's own environment (Slurm exports it all by
        # default): `--export=ALL,VAR=…` instead delays about half the jobs by a second here.
        env = {**self.env, "LAUNCHYARD_RUN_ID": tag}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
        return Submitted(tag, out.stdout.strip().split(";")[0], at)

    def ended(self, ids: Collection[str]) -> int:
        with self._lock:
            with open(self.jobcomp, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
            self._ended.update(re.findall(r"^JobId=(\d+) ", complete.decode(), re.M))
            return len(self._ended.intersection(ids))

    def ctld_pid(self) -> int:
        return int(self.ctld_pid_file.read_text().split()[0])

    def slurmd_pid(self) -> int:
        return int(self.slurmd_pid_file.read_text().split()[0])

    def tool(self, *args: str, timeout_s: float = 120) -> str:
        out = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stderr.strip()}")
        return out.stdout

    def schedule_cycle_us(self) -> dict[str, float]:
        """Main and backfill scheduling cycle times (mean, µs) from ``sdiag``."""
        text = self.tool("sdiag")
        main = text.split("Main schedule statistics", 1)[-1]
        backfill = text.split("Backfilling stats", 1)[-1]
        return {
            "main": _first_number(main, "Mean cycle"),
            "backfill": _first_number(backfill, "Mean cycle"),
            "main_last": _first_number(main, "Last cycle"),
        }

    def cancel(self, ids: Sequence[str]) -> None:
        for i in range(0, len(ids), 500):
            self.tool("scancel", *ids[i : i + 500])

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Until squeue shows nothing: a node still COMPLETING a job delays the next one by
        about a second, which is not Slurm's dispatch latency."""
        deadline = time.monotonic() + timeout_s
        while self.tool("squeue", "-h").strip() and time.monotonic() < deadline:
            time.sleep(0.05)

    def state(self, job_id: str) -> str:
        return self.tool("squeue", "-h", "-j", job_id, "-o", "%T").strip()


def _conf_value(text: str, key: str) -> str:
    match = re.search(rf"^{key}=(\S+)", text, re.M)
    if not match:
        raise RuntimeError(f"slurm.conf has no {key}")
    return match.group(1)


def _first_number(text: str, label: str) -> float:
    match = re.search(rf"{label}:\s*([0-9.]+)", text)
    return float(match.group(1)) if match else float("nan")


class Ray(Engine):
    """Ray Jobs on the cluster whose dashboard is at ``address``."""

    name = "Ray"
    TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

    def __init__(self, address: str) -> None:
        self.address = address
        self._local = threading.local()
        self.prefix = uuid.uuid4().hex[:6]

    def _client(self):  # type: ignore[no-untyped-def]
        if not hasattr(self._local, "client"):
            from ray.job_submission import JobSubmissionClient

            self._local.client = JobSubmissionClient(self.address)
        return self._local.client

    def submit(
        self, tag: str, argv: Sequence[str], gpus: int = 0, limit_s: float | None = None
    ) -> Submitted:
        # Ray Jobs has no time limit to give: its scheduler does not plan ahead.
        at = time.time()
        job_id = self._client().submit_job(
            entrypoint=shlex.join(argv),
            submission_id=f"{self.prefix}-{tag}",
            entrypoint_num_gpus=gpus or None,
            # A slot per job (16 declared, like the launchyard agent's -j and Slurm's CPUs):
            # without it all submitted jobs would start their drivers at once.
            entrypoint_num_cpus=1,
            runtime_env={"env_vars": {"LAUNCHYARD_RUN_ID": tag}},
        )
        return Submitted(tag, job_id, at)

    def ended(self, ids: Collection[str]) -> int:
        client = self._client()
        if len(ids) <= 3:
            return sum(_status(client.get_job_status(i)) in self.TERMINAL for i in ids)
        wanted = set(ids)
        return sum(
            1
            for job in client.list_jobs()
            if job.submission_id in wanted and _status(job.status) in self.TERMINAL
        )


def _status(status: object) -> str:
    return str(getattr(status, "value", status))


def engines_from_env() -> dict[str, str]:
    """Which peers this machine has running (the service scripts export these)."""
    found = {}
    if os.environ.get("SLURM_CONF"):
        found["slurm"] = os.environ["SLURM_CONF"]
    if os.environ.get("LAUNCHYARD_TEST_RAY_ADDRESS"):
        found["ray"] = os.environ["LAUNCHYARD_TEST_RAY_ADDRESS"]
    return found


GPU_WORK = Path(__file__).resolve().parent / "gpu_work.py"


def trivial_jobs(prefix: str, n: int) -> list[tuple[str, Sequence[str], int]]:
    return [(f"{prefix}{i}", ["true"], 0) for i in range(n)]


def run_mix(
    engine: Engine,
    mix: Sequence[tuple[int, float]],
    out: Path,
    timeout_s: float,
    limit_margin_s: float | None = None,
) -> tuple[list[Submitted], list[dict[str, object]]]:
    """Submit the packing mix in order (one client, so FIFO is the mix's order), await the
    end of every run, and return the submissions and each run's own record (gpu_work.py).

    With ``limit_margin_s`` each run gets a time limit of its duration plus that margin
    (what a user who knows their run's length writes), in the engine's own units."""
    import json

    out.unlink(missing_ok=True)
    jobs = [
        (
            f"p{i}",
            [sys.executable, str(GPU_WORK), str(seconds), str(out)],
            gpus,
            None if limit_margin_s is None else seconds + limit_margin_s,
        )
        for i, (gpus, seconds) in enumerate(mix)
    ]
    subs = engine.submit_many(jobs, threads=1)
    engine.wait_ended([s.engine_id for s in subs], timeout_s, every_s=0.25)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return subs, records


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def wait_state(get_state: Callable[[], str], want: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while get_state() != want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"never reached {want}")
        time.sleep(0.1)


SLURM_MAX_QUEUED = 9_900
"""Slurm refuses jobs past MaxJobCount (10,000 by default; the service's slurm.conf sets none)."""


def slurm_scale(
    conf: str, depths: Sequence[int], probes: int, threads: int, batch: int
) -> dict[str, Any]:
    """Slurm's side of the scale figure: held-back jobs (one job holds all 4 GPUs) at each
    depth, up to its MaxJobCount: sbatch rate and time, scheduling cycle, squeue, RSS."""
    slurm = Slurm(conf)
    out: dict[str, Any] = {"depths": {}, "notes": []}
    ids: list[str] = []
    blocker = slurm.submit("scale-blocker", ["sleep", "900"], 4, time_min=20)
    try:
        wait_state(lambda: slurm.state(blocker.engine_id), "RUNNING")
        # Before the fill: past MaxJobCount sbatch waits and retries instead of failing.
        start = time.perf_counter()
        array = slurm.submit("array", ["true"], 1, array=batch)
        out["batch_per_s"] = batch / (time.perf_counter() - start)
        slurm.cancel([array.engine_id])
        for depth in depths:
            target = min(depth, SLURM_MAX_QUEUED)
            if target <= len(ids):
                out["notes"].append(
                    f"Slurm not measured at {depth:,}: past its MaxJobCount (10,000 by default)"
                )
                continue
            if target < depth:
                out["notes"].append(
                    f"Slurm's {depth:,} row is measured with {target:,} queued: its MaxJobCount "
                    "(10,000 by default; the service's slurm.conf sets none) counts every job"
                )
            missing = target - len(ids)
            start = time.perf_counter()
            subs = slurm.submit_many(
                [(f"fill{len(ids) + i}", ["true"], 1) for i in range(missing)], threads
            )
            if "submit_per_s" not in out:
                out["submit_per_s"] = missing / (time.perf_counter() - start)
            ids += [s.engine_id for s in subs]
            p = probes
            one_more = []
            for _ in range(p):
                begin = time.perf_counter()
                ids.append(slurm.submit("one-more", ["true"], 1).engine_id)
                one_more.append(time.perf_counter() - begin)
            slurm.tool("sdiag", "--reset")
            time.sleep(3)  # a few scheduling cycles (sched_interval=1, bf_interval=1)
            cycles = slurm.schedule_cycle_us()
            out["depths"][depth] = {
                "submit_ms": median_ms(one_more),
                "claim_ms": cycles["main"] / 1000,
                "page_ms": median_ms(
                    timed(lambda: slurm.tool("squeue", "-h", "-t", "PD", "-o", "%i"), p)
                ),
                "server_mib": rss_kib(slurm.ctld_pid()) / 1024,
                "agent_mib": rss_kib(slurm.slurmd_pid()) / 1024,
            }
            out["notes"].append(
                f"Slurm at {target:,} queued: mean backfill cycle "
                f"{cycles['backfill'] / 1000:.1f} ms, "
                f"last main cycle {cycles['main_last'] / 1000:.1f} ms"
            )
    finally:
        slurm.cancel([blocker.engine_id, *ids])
    return out
