"""The ``ray`` backend: each run attempt is one Ray job, through Ray's job submission client.

Ray's scheduler places the job and its GPUs (``assigns_gpus = False``): the
entrypoint holds ``entrypoint_num_gpus`` and Ray sets its ``CUDA_VISIBLE_DEVICES``.
The submission id is ``launchyard-<run_id>-<attempt>``, so a second submit of one
attempt (a retry after a crash, a restarted agent) finds the job Ray already has
instead of starting it twice. The job's metadata names the run and this backend's
owner (host and state folder), which is how :meth:`RayBackend.live_handles` finds
what to adopt.

The run config reaches the job twice: as ``LAUNCHYARD_CONFIG_JSON`` (the JSON text,
when under 64 KiB) and as the file ``LAUNCHYARD_CONFIG_FILE``, written under
``shared_dir`` (default: the agent's state folder), which the job can read when it
runs on this machine or the folder is shared with the cluster.

``ray`` is imported in :meth:`RayBackend.create` only: the server imports this class
to check configs, and must not need Ray for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from launchyard.backends.base import Backend, Handle, LaunchSpec, LogChunk, Observation, Phase
from launchyard.backends.ray import config as cfg
from launchyard.backends.ray.jobs import job_output, observe, short, status_of
from launchyard.errors import BackendError, InvalidInputError, MissingDependencyError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PREFIX = "launchyard-"
MAX_CONFIG_ENV_BYTES = 64 * 1024
"""Larger run configs go only through the file: one environment string must stay < 128 KiB."""
INSTALL_HINT = "pip install 'launchyard[ray]'"
STOP_ATTEMPTS = 25
"""Tries of ``stop_job`` 0.2 s apart while a just-submitted job has no supervisor yet."""

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
T = TypeVar("T")


class _Gone(Exception):
    """Ray answered 404: it does not know this job."""


class _Exists(Exception):
    """Ray refused a submission id it already has."""


class RayBackend(Backend):
    """Submits attempts as Ray jobs; status, logs and stop through the dashboard's job API."""

    name = "ray"
    assigns_gpus = False
    OPTIONS: ClassVar[tuple[str, ...]] = ("address", "shared_dir", "headers", "verify")

    def __init__(
        self,
        state_dir: Path,
        *,
        address: str | None = None,
        shared_dir: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool | str = True,
    ) -> None:
        from_env = os.environ.get("RAY_ADDRESS", "")
        self.address = address or (from_env if from_env.startswith("http") else DEFAULT_ADDRESS)
        root = Path(shared_dir).expanduser() if shared_dir else Path(state_dir)
        self.jobs_dir = root.resolve() / "jobs"
        self.cancelled_dir = root.resolve() / "cancelled-while-pending"
        """Markers that outlive ``release``: Ray may still hold such a job for a while."""
        self.owner = f"{socket.gethostname()}:{Path(state_dir).resolve()}"
        self.headers = dict(headers or {})
        self.verify = verify
        self._clients: dict[str, Any] = {}
        self._entrypoints: dict[str, str] = {}
        _client_class()  # fail now, naming the extra, when Ray is not installed

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
                f"a ray queue runs commands on the Ray cluster, not image {spec.image!r}; "
                "submit a command after `--` (dependencies go in the queue's runtime_env)"
            )
        if not spec.command:
            raise InvalidInputError("a ray run needs a command: launchyard launch -q QUEUE -- CMD")
        if not _SAFE_KEY.fullmatch(spec.key):
            raise InvalidInputError(
                f"run id {spec.run_id!r} cannot name a job: use letters, digits, '.', '_', '-'"
            )
        address = str(spec.config.get("address") or self.address)
        submission_id = PREFIX + spec.key
        config_file = await asyncio.to_thread(self._write_config, spec)
        request = self._request(spec, submission_id, config_file)
        with contextlib.suppress(_Exists):  # submitted before (a retry, a restart): adopt it
            await self._call(address, lambda client: client.submit_job(**request))
        return Handle(
            backend=self.name,
            run_id=spec.run_id,
            attempt=spec.attempt,
            data={"submission_id": submission_id, "address": address},
        )

    async def poll(self, handle: Handle) -> Observation:
        found = self._identify(handle)
        if found is None:
            return Observation(Phase.LOST, reason="Ray has no job for this run")
        address, submission_id = found
        try:
            info = await self._call(address, lambda client: client.get_job_info(submission_id))
        except _Gone:
            return Observation(Phase.LOST, reason=f"Ray no longer knows job {submission_id}")
        observation = observe(info)
        if not observation.phase.is_terminal and self._cancelled(handle):
            return Observation(Phase.CANCELLED, reason="cancelled")
        return observation

    async def cancel(self, handle: Handle, grace_s: float = 10.0) -> None:
        """``stop_job``: Ray sends SIGTERM, then SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S``.

        Ray's job API cannot drop a job that waits for resources: the stop waits in the
        job's queue and takes effect the moment Ray starts it. So a job cancelled while
        pending is marked here, reported cancelled at once, and never adopted again.
        """
        found = self._identify(handle)
        if found is None:
            return
        address, submission_id = found
        try:
            info = await self._call(address, lambda client: client.get_job_info(submission_id))
            if observe(info).phase.is_terminal:
                return
            for _ in range(STOP_ATTEMPTS):  # False: its supervisor is not there yet
                if await self._call(address, lambda client: client.stop_job(submission_id)):
                    if status_of(info) == "PENDING":
                        await asyncio.to_thread(self._mark_cancelled, handle)
                    return
                await asyncio.sleep(0.2)
        except _Gone:
            return
        raise BackendError(f"Ray did not take the stop of job {submission_id}; try again")

    async def read_logs(self, handle: Handle, offset: int) -> LogChunk:
        """The job's output from ``offset`` (characters of Ray's log), without Ray's own lines."""
        found = self._identify(handle)
        if found is None:
            return LogChunk(text="", next_offset=offset)
        address, submission_id = found
        try:
            if submission_id not in self._entrypoints:
                info = await self._call(address, lambda c: c.get_job_info(submission_id))
                self._entrypoints[submission_id] = str(info.entrypoint)
            log = await self._call(address, lambda c: c.get_job_logs(submission_id))
        except _Gone:
            return LogChunk(text="", next_offset=offset)
        entrypoint = self._entrypoints[submission_id]
        text, next_offset = job_output(str(log), offset, submission_id, entrypoint)
        return LogChunk(text=text, next_offset=next_offset)

    async def release(self, handle: Handle) -> None:
        if _SAFE_KEY.fullmatch(f"{handle.run_id}-{handle.attempt}"):
            folder = self.jobs_dir / f"{handle.run_id}-{handle.attempt}"
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def live_handles(self) -> list[Handle]:
        """Jobs this backend submitted (same owner) that Ray has not finished yet."""
        jobs = await self._call(self.address, lambda client: client.list_jobs())
        handles = []
        for job in jobs:
            metadata = job.metadata or {}
            submission_id = job.submission_id or ""
            if (
                submission_id.startswith(PREFIX)
                and metadata.get("launchyard_owner") == self.owner
                and status_of(job) in ("PENDING", "RUNNING")
            ):
                handle = Handle(
                    backend=self.name,
                    run_id=metadata["launchyard_run_id"],
                    attempt=int(metadata["launchyard_attempt"]),
                    data={"submission_id": submission_id, "address": self.address},
                )
                if not self._cancelled(handle):
                    handles.append(handle)
        return sorted(handles, key=lambda h: (h.run_id, h.attempt))

    # -- helpers -----------------------------------------------------------------------

    def _request(self, spec: LaunchSpec, submission_id: str, config_file: Path) -> dict[str, Any]:
        config = spec.config
        runtime_env = dict(config.get("runtime_env") or {})
        env = {k: cfg.env_value(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
        env.update({str(k): cfg.env_value(v) for k, v in (config.get("env") or {}).items()})
        env.update({str(k): str(v) for k, v in spec.env.items()})
        env["LAUNCHYARD_RUN_ID"] = spec.run_id
        env["LAUNCHYARD_CONFIG_FILE"] = str(config_file)
        config_json = json.dumps(spec.run_config)
        if len(config_json.encode()) <= MAX_CONFIG_ENV_BYTES:
            env["LAUNCHYARD_CONFIG_JSON"] = config_json
        runtime_env["env_vars"] = env
        request: dict[str, Any] = {
            "entrypoint": shlex.join(spec.command),
            "submission_id": submission_id,
            "runtime_env": runtime_env,
            "metadata": {
                "launchyard_run_id": spec.run_id,
                "launchyard_attempt": str(spec.attempt),
                "launchyard_entity": spec.entity,
                "launchyard_project": spec.project,
                "launchyard_queue": spec.queue,
                "launchyard_owner": self.owner,
            },
        }
        for key in ("entrypoint_num_gpus", "entrypoint_num_cpus", "entrypoint_memory"):
            if config.get(key):
                request[key] = config[key]
        if config.get("entrypoint_resources"):
            request["entrypoint_resources"] = dict(config["entrypoint_resources"])
        return request

    def _write_config(self, spec: LaunchSpec) -> Path:
        folder = self.jobs_dir / spec.key
        folder.mkdir(parents=True, exist_ok=True)
        try:
            text = json.dumps(spec.run_config)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"the run config is not JSON: {exc}") from exc
        path = folder / "config.json"
        tmp = folder / f"config.json.{os.getpid()}.{threading.get_ident()}.tmp"  # launches race
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def _cancelled(self, handle: Handle) -> bool:
        return (self.cancelled_dir / f"{handle.run_id}-{handle.attempt}").exists()

    def _mark_cancelled(self, handle: Handle) -> None:
        self.cancelled_dir.mkdir(parents=True, exist_ok=True)
        (self.cancelled_dir / f"{handle.run_id}-{handle.attempt}").touch()

    def _identify(self, handle: Handle) -> tuple[str, str] | None:
        submission_id = handle.data.get("submission_id")
        address = handle.data.get("address") or self.address
        if submission_id != f"{PREFIX}{handle.run_id}-{handle.attempt}":
            return None  # not one of ours: never touch another job
        return str(address), submission_id

    async def _call(self, address: str, action: Callable[[Any], T]) -> T:
        """Run one blocking client call in a thread; Ray's errors become ours."""

        def call() -> T:
            client = self._clients.get(address)
            if client is None:
                client = _client_class()(address, headers=self.headers, verify=self.verify)
                self._clients[address] = client
            return action(client)

        try:
            return await asyncio.to_thread(call)
        except Exception as exc:
            text = str(exc)
            if "status code 404" in text or "does not exist" in text:
                raise _Gone(text) from None
            if "already exists" in text:
                raise _Exists(text) from None
            raise BackendError(
                f"Ray at {address}: {short(text)} (is the cluster up, and is {address} its "
                "dashboard URL? set `address` in the agent's ray options or the queue's config)"
            ) from exc


def _client_class() -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise MissingDependencyError(
            f"the ray backend needs Ray's job client: {INSTALL_HINT} ({exc})"
        ) from exc
    return JobSubmissionClient
