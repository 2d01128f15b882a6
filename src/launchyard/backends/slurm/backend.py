"""The ``slurm`` backend: each run attempt is one Slurm batch job.

The agent runs on a login node and drives the cluster with Slurm's own tools
(:mod:`.commands`); Slurm's scheduler places the job and its GPUs
(``assigns_gpus = False``). Every attempt has a folder on a filesystem the compute
nodes share, ``<shared_dir>/jobs/<run_id>-<attempt>/``: ``job.sh`` (the batch script,
mode 0700: it holds the run's environment), ``config.json``
(``LAUNCHYARD_CONFIG_FILE``), ``output.log`` (the job's stdout and stderr, read while
it runs), ``handle.json`` (the job id, written right after ``sbatch``) and
``end.json`` (the end, kept once seen so it outlives Slurm's memory of the job).

The job is named ``launchyard-<run_id>-<attempt>`` and its ``--comment`` names the run,
so a second launch of one attempt, or a restarted agent, finds it with ``squeue
--name`` instead of submitting it twice.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from launchyard.backends.base import Backend, Handle, LaunchSpec, LogChunk, Observation, Phase
from launchyard.backends.slurm import config as cfg
from launchyard.backends.slurm import files
from launchyard.backends.slurm.commands import SlurmCommands
from launchyard.backends.slurm.states import (
    SQUEUE_FORMAT,
    JobRecord,
    observe,
    parse_key_values,
    parse_squeue,
)
from launchyard.errors import BackendError, InvalidInputError

NAME_PREFIX = "launchyard-"
HIDDEN_ENV_PREFIXES = ("LAUNCHYARD_", "SLURM_")
"""The agent's own settings (its API key) and any allocation it runs in (``SLURM_JOB_ID``
...) never reach a job; sbatch exports the rest, ``SBATCH_*`` site defaults included."""
HIDDEN_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
"""Slurm sets these on the node for the GPUs it allocates; the agent's values must not win."""

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class SlurmBackend(Backend):
    """Submits attempts with ``sbatch``, watches them with ``squeue``, stops them (``scancel``)."""

    name = "slurm"
    assigns_gpus = False
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "slurm_conf",
        "bin_dir",
        "shared_dir",
        "jobcomp_log",
        "status_ttl_s",
        "command_timeout_s",
    )

    def __init__(
        self,
        state_dir: Path,
        *,
        slurm_conf: str | None = None,
        bin_dir: str | None = None,
        shared_dir: str | None = None,
        jobcomp_log: str | None = None,
        status_ttl_s: float = 0.5,
        command_timeout_s: float = 30.0,
    ) -> None:
        self.commands = SlurmCommands(
            bin_dir=bin_dir, slurm_conf=slurm_conf, timeout_s=command_timeout_s
        )
        root = Path(shared_dir).expanduser() if shared_dir else Path(state_dir)
        self.jobs_dir = root.resolve() / "jobs"
        self.jobcomp_log = Path(jobcomp_log).expanduser() if jobcomp_log else None
        self._jobcomp_asked = jobcomp_log is not None
        self.status_ttl_s = status_ttl_s
        self.submit_env = {
            k: v
            for k, v in self.commands.env.items()
            if not k.startswith(HIDDEN_ENV_PREFIXES) and k not in HIDDEN_ENV
        }
        if "SLURM_CONF" in self.commands.env:
            self.submit_env["SLURM_CONF"] = self.commands.env["SLURM_CONF"]
        self._snapshot: dict[str, JobRecord] | None = None
        self._snapshot_at = 0.0
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def create(cls, *, state_dir: Path, lease_ttl_s: float, options: dict[str, Any]) -> Backend:
        cls.check_options(options)
        return cls(state_dir, **options)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        cfg.check_config(config)

    @classmethod
    def gpu_demand(cls, config: dict[str, Any]) -> int:
        return cfg.gpu_demand(config)

    # -- the interface -----------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> Handle:
        self.check_config(spec.config)
        if spec.image:
            raise InvalidInputError(
                f"a slurm queue runs commands on the cluster's nodes, not image {spec.image!r}; "
                "submit a command after `--` (containers: add e.g. '--container-image=...' "
                "to the queue's `extra` where the cluster has pyxis)"
            )
        if not spec.command:
            raise InvalidInputError(
                "a slurm run needs a command: launchyard launch -q QUEUE -- CMD"
            )
        job_dir = self._job_dir(spec.run_id, spec.attempt)
        if job_dir is None:
            raise InvalidInputError(
                f"run id {spec.run_id!r} cannot name a job: use letters, digits, '.', '_', '-'"
            )
        lock = await asyncio.to_thread(files.lock, job_dir)
        try:  # one submission per attempt, across threads, agents and restarts
            recorded = files.read_json(job_dir / "handle.json")
            if recorded is not None:
                return Handle.from_json(recorded)
            name = NAME_PREFIX + spec.key
            job_id = await self._find_by_name(name)
            if job_id is None:
                script = await asyncio.to_thread(files.write_files, spec, job_dir)
                job_id = await self._submit(spec, job_dir, name, script)
            handle = Handle(
                backend=self.name,
                run_id=spec.run_id,
                attempt=spec.attempt,
                data={"job_id": job_id, "name": name},
            )
            files.write_json(job_dir / "handle.json", handle.to_json())
            self._snapshot = None
            return handle
        finally:
            lock.close()

    async def poll(self, handle: Handle) -> Observation:
        job_dir, job_id, name = self._identify(handle)
        if job_dir is None or job_id is None:
            return Observation(Phase.LOST, reason="Slurm has no job for this run")
        ended = files.read_json(job_dir / "end.json")
        if ended is not None:
            return Observation(Phase(ended["phase"]), ended.get("exit_code"), ended.get("reason"))
        job = (await self._jobs()).get(job_id)
        if job is None or job.name != name:
            job = await self._forgotten_job(job_id, name)
        if job is None:
            return Observation(Phase.LOST, reason=f"Slurm no longer knows job {job_id}")
        observation = observe(job)
        if observation.phase.is_terminal and job_dir.is_dir():
            end = {"phase": observation.phase.value, "exit_code": observation.exit_code}
            files.write_json(job_dir / "end.json", end | {"reason": observation.reason})
        return observation

    async def cancel(self, handle: Handle, grace_s: float = 10.0) -> None:
        """``scancel``: Slurm sends SIGTERM, then SIGKILL after the cluster's ``KillWait``."""
        job_dir, job_id, name = self._identify(handle)
        if job_dir is None or job_id is None or (job_dir / "end.json").exists():
            return
        await self.commands.run("scancel", [f"--name={name}", job_id], check=False)
        self._snapshot = None

    async def read_logs(self, handle: Handle, offset: int) -> LogChunk:
        job_dir, _, _ = self._identify(handle)
        if job_dir is None:
            return LogChunk(text="", next_offset=offset)
        return await asyncio.to_thread(files.read_log, job_dir, max(0, offset))

    async def release(self, handle: Handle) -> None:
        job_dir = self._job_dir(handle.run_id, handle.attempt)
        if job_dir is not None:
            await asyncio.to_thread(shutil.rmtree, job_dir, True)

    async def live_handles(self) -> list[Handle]:
        """Handles of this backend's jobs that Slurm still holds and that have not ended."""
        _, out = await self.commands.run("squeue", ["--me", "-h", "-O", "JobID:|,Name:|"])
        handles = []
        for line in out.splitlines():
            job_id, name = (part.strip() for part in (line + "|").split("|")[:2])
            if not name.startswith(NAME_PREFIX):
                continue
            run_id, _, attempt = name[len(NAME_PREFIX) :].rpartition("-")
            job_dir = self._job_dir(run_id, int(attempt)) if attempt.isdigit() else None
            recorded = files.read_json(job_dir / "handle.json") if job_dir is not None else None
            if recorded is not None and recorded.get("data", {}).get("job_id") == job_id:
                handles.append(Handle.from_json(recorded))
        return handles

    # -- helpers -----------------------------------------------------------------------

    async def _submit(self, spec: LaunchSpec, job_dir: Path, name: str, script: Path) -> str:
        args = [
            "--parsable",
            f"--job-name={name}",
            f"--comment=launchyard run {spec.run_id} attempt {spec.attempt}",
            f"--output={job_dir / 'output.log'}",
            f"--chdir={spec.config.get('working_dir') or job_dir / 'work'}",
            "--no-requeue",  # a preempted job ends; launchyard requeues the run itself
            *cfg.sbatch_options(spec.config),
            str(script),
        ]
        _, out = await self.commands.run("sbatch", args, env=self.submit_env)
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise BackendError(f"sbatch answered {out.strip()!r} instead of a job id")
        return job_id

    async def _find_by_name(self, name: str) -> str | None:
        """The job id of a job already submitted under this name (pending, running or ended)."""
        args = ["--me", "-h", "-t", "all", f"--name={name}", "-O", "JobID:|"]
        _, out = await self.commands.run("squeue", args)
        ids = [line.split("|")[0].strip() for line in out.splitlines()]
        return max((i for i in ids if i.isdigit()), key=int, default=None)

    async def _jobs(self) -> dict[str, JobRecord]:
        """This user's jobs from one ``squeue``, shared by every poll for ``status_ttl_s``."""
        if self._snapshot is not None and time.monotonic() - self._snapshot_at < self.status_ttl_s:
            return self._snapshot
        # One lock per event loop: concurrent polls wait for one squeue instead of each running it.
        async with self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock()):
            snapshot = self._snapshot
            if snapshot is not None and time.monotonic() - self._snapshot_at < self.status_ttl_s:
                return snapshot
            started = time.monotonic()
            args = ["--me", "-h", "-t", "all", "-O", SQUEUE_FORMAT]
            snapshot = parse_squeue((await self.commands.run("squeue", args))[1])
            self._snapshot, self._snapshot_at = snapshot, started
            return snapshot

    async def _forgotten_job(self, job_id: str, name: str) -> JobRecord | None:
        """A job not in the last snapshot: ask ``scontrol``, then the job-completion log."""
        status, out = await self.commands.run(
            "scontrol", ["show", "job", "-o", job_id], check=False
        )
        job = parse_key_values(out) if status == 0 else None
        if job is not None and job.name == name:
            return job
        log_path = self.jobcomp_log or await self._jobcomp_location()
        if log_path is None:
            return None
        return await asyncio.to_thread(files.search_jobcomp, log_path, job_id, name)

    async def _jobcomp_location(self) -> Path | None:
        """The cluster's job-completion log, from ``scontrol show config`` (asked once)."""
        if self._jobcomp_asked:
            return self.jobcomp_log
        self._jobcomp_asked = True
        _, out = await self.commands.run("scontrol", ["show", "config"], check=False)
        values = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition("=") for line in out.splitlines())
        )
        if values.get("JobCompType") == "jobcomp/filetxt" and values.get("JobCompLoc"):
            self.jobcomp_log = Path(values["JobCompLoc"])
        return self.jobcomp_log

    def _identify(self, handle: Handle) -> tuple[Path | None, str | None, str]:
        """The attempt's folder, job id and name; the folder's own record wins over the handle."""
        job_dir = self._job_dir(handle.run_id, handle.attempt)
        name = NAME_PREFIX + f"{handle.run_id}-{handle.attempt}"
        if job_dir is None:
            return None, None, name
        recorded = files.read_json(job_dir / "handle.json")
        data: Mapping[str, Any] = (recorded or {}).get("data") or handle.data
        job_id = data.get("job_id")
        return job_dir, job_id if isinstance(job_id, str) and job_id.isdigit() else None, name

    def _job_dir(self, run_id: str, attempt: int) -> Path | None:
        """The attempt's folder; None when the names could escape ``jobs/``."""
        key = f"{run_id}-{attempt}"
        return self.jobs_dir / key if _SAFE_KEY.fullmatch(key) else None
