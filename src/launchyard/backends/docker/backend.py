"""The ``docker`` backend: each run attempt is one container on a Docker engine.

The container is named ``launchyard-<run_id>-<attempt>``, so the name is the key:
a second launch of the same attempt finds the container instead of starting
another, and a restarted agent finds its containers by the ``launchyard.*`` labels
(:meth:`DockerBackend.live_handles`). GPUs are given as a device request for the
exact ids the agent assigned; the NVIDIA runtime then shows the container only
those (``NVIDIA_VISIBLE_DEVICES``).

What Docker cannot hold is kept in ``<state_dir>/runs/<key>/``: ``config.json``
(the run config, mounted read-only at ``/launchyard/config.json``), ``cancelled``
(present once we stopped it, so an exit by SIGKILL reads as cancelled, not failed)
and the mirrored output (:mod:`launchyard.backends.docker.logs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

from launchyard.backends.base import Backend, Handle, LaunchSpec, LogChunk, Observation, Phase
from launchyard.backends.docker import config as cfg
from launchyard.backends.docker import launching
from launchyard.backends.docker.launching import explain
from launchyard.backends.docker.logs import LogMirror
from launchyard.errors import BackendError, InvalidInputError, MissingDependencyError

CANCEL_FILE = "cancelled"
OWNER_LABEL = "launchyard.owner"
RUN_LABEL = "launchyard.run-id"
OPTION_KEYS = ("base_url", "timeout_s")
LOG_DRAIN_TIMEOUT_S = 30.0
"""How long a read waits for the output of an ended container to be copied whole."""
_LIVE_STATES = ("created", "running", "paused", "restarting")
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


def _sdk() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise MissingDependencyError(
            "the docker backend needs the Docker SDK: pip install 'launchyard[docker]'"
        ) from exc
    return docker


class DockerBackend(Backend):
    """Runs attempts as containers through the Docker SDK; the agent assigns the GPU ids."""

    name = "docker"
    assigns_gpus = True

    def __init__(
        self, state_dir: Path, *, base_url: str | None = None, timeout_s: float = 60.0
    ) -> None:
        docker = _sdk()
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.runs_dir = self.state_dir / "runs"
        self.owner = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
        self._base_url = base_url
        self.base_url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self._errors = docker.errors
        try:
            _check_socket(self.base_url)  # the SDK leaks a socket when a connect fails
            if base_url:
                self.client = docker.DockerClient(
                    base_url=base_url, timeout=timeout_s, max_pool_size=64
                )
            else:
                self.client = docker.from_env(timeout=timeout_s, max_pool_size=64)
            self.client.ping()
        except (OSError, docker.errors.DockerException) as exc:
            raise BackendError(
                f"Docker engine not reachable at {self.base_url}: start dockerd or set "
                f"backends.docker.base_url in the agent config ({exc})",
                fields={"base_url": self.base_url},
            ) from exc
        self._mirrors: dict[str, LogMirror] = {}
        self._lock = threading.Lock()

    # -- class hooks (used by the server too: no SDK here) ---------------------------------

    @classmethod
    def create(cls, *, state_dir: Path, lease_ttl_s: float, options: dict[str, Any]) -> Backend:
        for key in options:
            if key not in OPTION_KEYS:
                raise InvalidInputError(
                    f"backends.docker cannot hold {key!r}; allowed: {', '.join(OPTION_KEYS)}",
                    fields={"key": key, "allowed": list(OPTION_KEYS)},
                )
        timeout_s = options.get("timeout_s", 60.0)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise InvalidInputError(
                f"backends.docker.timeout_s must be a number of seconds > 0, got {timeout_s!r}"
            )
        base_url = options.get("base_url")
        if base_url is not None and not isinstance(base_url, str):
            raise InvalidInputError(f"backends.docker.base_url must be a URL, got {base_url!r}")
        return cls(state_dir, base_url=base_url, timeout_s=float(timeout_s))

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        cfg.check_config(config)

    @classmethod
    def gpu_demand(cls, config: dict[str, Any]) -> int:
        return cfg.gpu_demand(config)

    # -- the interface ---------------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> Handle:
        self.check_config(spec.config)
        image = spec.config.get("image") or spec.image
        if not image:
            raise InvalidInputError("a docker queue needs an image: -d IMAGE")
        if not _NAME.fullmatch(spec.key):
            raise InvalidInputError(f"run id {spec.run_id!r} cannot name a container")
        return await asyncio.to_thread(self._launch, spec, str(image))

    async def poll(self, handle: Handle) -> Observation:
        return await asyncio.to_thread(self._poll, handle)

    async def cancel(self, handle: Handle, grace_s: float = 10.0) -> None:
        await asyncio.to_thread(self._cancel, handle, grace_s)

    async def read_logs(self, handle: Handle, offset: int) -> LogChunk:
        return await asyncio.to_thread(self._read_logs, handle, max(0, offset))

    async def release(self, handle: Handle) -> None:
        await asyncio.to_thread(self._release, handle)

    async def live_handles(self) -> list[Handle]:
        """Handles of this backend's containers that have not ended: what an agent adopts.

        Only containers launched on the same ``state_dir`` (label ``launchyard.owner``),
        so two agents sharing one Docker host never adopt each other's runs.
        """
        return await asyncio.to_thread(self._live_handles)

    async def close(self) -> None:
        with self._lock:
            mirrors, self._mirrors = list(self._mirrors.values()), {}
        for mirror in mirrors:
            mirror.stop()
        self.client.close()

    # -- launch ----------------------------------------------------------------------------

    def _launch(self, spec: LaunchSpec, image: str) -> Handle:
        name = _container_name(spec.run_id, spec.attempt)
        handle = Handle(self.name, spec.run_id, spec.attempt, {"container": name, "image": image})
        container = self._find(name)
        if container is None:
            folder = self._run_dir(spec.run_id, spec.attempt)
            launching.write_run_config(spec, folder)
            launching.ensure_image(self.client, image, str(spec.config.get("pull") or "missing"))
            labels = {**spec.labels(), OWNER_LABEL: self.owner}
            options = launching.create_options(spec, folder, labels)
            try:
                container = self.client.containers.create(
                    image, command=spec.command or None, name=name, **options
                )
            except self._errors.ImageNotFound as exc:
                raise BackendError(f"image {image!r} not found: {explain(exc)}") from exc
            except self._errors.APIError as exc:
                if exc.status_code != 409:  # 409: a concurrent launch created it first
                    raise BackendError(f"docker refused the container: {explain(exc)}") from exc
                container = self._find(name)
                if container is None:
                    raise BackendError(f"container {name} vanished while launching") from exc
        if container.status == "created" and not container.attrs["State"].get("Error"):
            try:
                container.start()
            except self._errors.APIError as exc:
                self._remove(name)
                raise BackendError(f"the container did not start: {explain(exc)}") from exc
        return handle

    # -- observing and stopping ------------------------------------------------------------

    def _poll(self, handle: Handle) -> Observation:
        name = _container_name(handle.run_id, handle.attempt)
        cancelled = (self._run_dir(handle.run_id, handle.attempt) / CANCEL_FILE).exists()
        container = self._find(name)
        if container is None:
            if cancelled:
                return Observation(Phase.CANCELLED, reason="cancelled")
            return Observation(Phase.LOST, reason=f"container {name} is gone (removed outside)")
        state: dict[str, Any] = container.attrs["State"]
        status = state.get("Status")
        if status == "created" and not state.get("Error"):
            return Observation(Phase.PENDING, reason="container created, starting")
        if status in ("running", "paused", "restarting"):
            return Observation(Phase.RUNNING)
        code = state.get("ExitCode")
        code = code if isinstance(code, int) else None
        if cancelled:
            return Observation(Phase.CANCELLED, exit_code=code, reason="cancelled")
        if state.get("OOMKilled"):
            limit = int(container.attrs["HostConfig"].get("Memory") or 0)
            shown = f" (memory limit {_size(limit)})" if limit else " (the host ran out of memory)"
            return Observation(Phase.FAILED, exit_code=code, reason="OOMKilled" + shown)
        if state.get("Error"):
            return Observation(
                Phase.FAILED, exit_code=code, reason=f"the container failed: {state['Error']}"
            )
        if code == 0:
            return Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0")
        hint = " (killed by SIGKILL from outside the run)" if code == 137 else ""
        return Observation(Phase.FAILED, exit_code=code, reason=f"exit code {code}{hint}")

    def _cancel(self, handle: Handle, grace_s: float) -> None:
        name = _container_name(handle.run_id, handle.attempt)
        container = self._find(name)
        if container is None or container.status not in _LIVE_STATES:
            return
        folder = self._run_dir(handle.run_id, handle.attempt)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CANCEL_FILE).touch()
        try:
            if container.status == "created":  # never started: nothing to stop
                self._remove(name)
            else:  # SIGTERM, then SIGKILL after the grace
                container.stop(timeout=max(0, math.ceil(grace_s)))
        except self._errors.NotFound:
            return
        except self._errors.APIError as exc:
            raise BackendError(f"could not stop container {name}: {explain(exc)}") from exc

    def _read_logs(self, handle: Handle, offset: int) -> LogChunk:
        name = _container_name(handle.run_id, handle.attempt)
        mirror = self._mirror(handle, name)
        text, next_offset = mirror.read(offset)
        if next_offset == offset and not mirror.done and self._has_ended(name):
            # Caught up with the file, but the container has ended: once the mirror holds
            # everything, read again, so that an empty answer means "no more output".
            mirror.wait(LOG_DRAIN_TIMEOUT_S)
            text, next_offset = mirror.read(offset)
        return LogChunk(text=text, next_offset=next_offset)

    def _mirror(self, handle: Handle, name: str) -> LogMirror:
        with self._lock:
            mirror = self._mirrors.get(name)
            if mirror is None or (not mirror.alive and not mirror.done):
                mirror = LogMirror(
                    self._run_dir(handle.run_id, handle.attempt),
                    open_stream=lambda: self._follow_stream(name),
                    has_ended=lambda: self._has_ended(name),
                    name=name,
                )
                self._mirrors[name] = mirror
                mirror.start()
            return mirror

    def _follow_stream(self, name: str) -> Any:
        # A client of its own without a read timeout: a quiet run must not break the stream.
        api = self._api_client()
        try:
            return api.logs(name, stdout=True, stderr=True, stream=True, follow=True)
        finally:
            api.close()  # the stream keeps its own connection open

    def _api_client(self) -> Any:
        docker = _sdk()
        kwargs = {"base_url": self._base_url} if self._base_url else docker.utils.kwargs_from_env()
        return docker.APIClient(**kwargs, version=self.client.api.api_version, timeout=None)

    def _has_ended(self, name: str) -> bool:
        container = self._find(name)
        return container is None or container.status not in _LIVE_STATES

    def _release(self, handle: Handle) -> None:
        name = _container_name(handle.run_id, handle.attempt)
        with self._lock:
            mirror = self._mirrors.pop(name, None)
        if mirror is not None:
            mirror.stop()
        self._remove(name)
        shutil.rmtree(self._run_dir(handle.run_id, handle.attempt), ignore_errors=True)

    def _live_handles(self) -> list[Handle]:
        found = self.client.containers.list(
            all=True, filters={"label": [RUN_LABEL, f"{OWNER_LABEL}={self.owner}"]}
        )
        handles = []
        for container in found:
            labels = container.labels
            if container.status not in _LIVE_STATES:
                continue
            run_id, attempt = labels[RUN_LABEL], int(labels.get("launchyard.attempt", "1"))
            data = {"container": container.name, "image": container.attrs["Config"]["Image"]}
            handles.append(Handle(self.name, run_id, attempt, data))
        return sorted(handles, key=lambda h: (h.run_id, h.attempt))

    # -- helpers ---------------------------------------------------------------------------

    def _find(self, name: str) -> Any:
        """The container, or None when it does not exist."""
        try:
            return self.client.containers.get(name)
        except self._errors.NotFound:
            return None
        except self._errors.DockerException as exc:
            raise BackendError(f"Docker engine at {self.base_url} failed: {exc}") from exc

    def _remove(self, name: str) -> None:
        try:
            self.client.api.remove_container(name, force=True, v=True)
        except self._errors.NotFound:
            pass
        except self._errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise BackendError(f"could not remove container {name}: {exc}") from exc

    def _run_dir(self, run_id: str, attempt: int) -> Path:
        return self.runs_dir / f"{run_id}-{attempt}"


def _check_socket(url: str) -> None:
    """Connect to a ``unix://`` engine socket once, raising OSError when nobody listens."""
    if not url.startswith(("unix://", "http+unix://")):
        return
    path = url.split("://", 1)[1]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)


def _container_name(run_id: str, attempt: int) -> str:
    return f"launchyard-{run_id}-{attempt}"


def _size(size: int) -> str:
    """``8 MiB`` from 8388608."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:g} {unit}"
