"""The ``local`` backend: each run attempt is a process group on this machine.

Every attempt gets a folder, ``<state_dir>/runs/<run_id>-<attempt>/``, and a
supervisor process (:mod:`launchyard.backends._supervisor`) started in a session
of its own, forked by a small helper process (:mod:`launchyard.backends._spawner`).
The supervisor, not the agent, is the parent of the run. Why:

- The exit status is collected by the supervisor and written to ``exit.json``,
  so it survives the agent being SIGKILLed and restarted. A restarted agent finds
  its runs again from the folders (:meth:`LocalBackend.live_handles`, adoption).
- Everything the backend knows about a run lives in its folder; the handle only
  names the folder. Any ``LocalBackend`` on the same ``state_dir`` can poll,
  cancel and read the logs of any run.
- Dead-man's switch: :meth:`LocalBackend.keepalive` touches the folder's
  ``lease`` file; when the agent stops renewing it, the supervisor kills the run
  before the server's lease expires and the run could be handed to another agent.

Folder layout: ``handle.json`` (the handle, with the supervisor's pid and start
time), ``config.json`` (the run config, ``LAUNCHYARD_CONFIG_FILE``), ``env.json``
(the run's exact environment, mode 0600), ``lease``, ``cancel`` (present once
cancelled), ``child.json`` (the command's pid and process group),
``exit.json`` (the end), ``output.log`` (stdout and stderr), ``supervisor.log``
and ``work/`` (the default working directory).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from launchyard.backends import _supervisor as sup
from launchyard.backends._spawner import HelperLostError, Spawner
from launchyard.backends.base import Backend, Handle, LaunchSpec, LogChunk, Observation, Phase
from launchyard.errors import BackendError, InvalidInputError

ALLOWED_CONFIG_KEYS = ("gpus", "env", "working_dir", "cache_dir")
MAX_LOG_CHUNK = 1024 * 1024
"""Most bytes of output returned by one ``read_logs`` call."""
DEFAULT_GRACE_S = 10.0
"""Grace between SIGTERM and SIGKILL when the supervisor itself gets SIGTERM."""
SUPERVISOR_SCRIPT = Path(sup.__file__).resolve()
VANISHED = "the local supervisor process vanished"
SIGKILL_HINT = " (out of memory or killed from outside)"

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class LocalBackend(Backend):
    """Runs attempts as process groups on this machine, each watched by a supervisor."""

    name: ClassVar[str] = "local"
    assigns_gpus: ClassVar[bool] = True

    def __init__(
        self, state_dir: Path, *, lease_ttl_s: float = 30.0, python: str = sys.executable
    ) -> None:
        if lease_ttl_s <= 0:
            raise InvalidInputError(f"lease_ttl_s must be positive, got {lease_ttl_s!r}")
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.runs_dir = self.state_dir / "runs"
        self.lease_ttl_s = lease_ttl_s
        self.python = python
        self._wake: Callable[[str], None] | None = None
        self._spawner = Spawner(
            python, SUPERVISOR_SCRIPT, self.state_dir / "supervisor-helper.log", self._ended
        )

    # -- the interface -----------------------------------------------------------------

    @classmethod
    def create(cls, *, state_dir: Path, lease_ttl_s: float, options: dict[str, Any]) -> Backend:
        """``options`` may name ``python``, the interpreter that runs the supervisors."""
        unknown = sorted(set(options) - {"python"})
        if unknown:
            raise InvalidInputError(
                f"the local backend has no option {unknown[0]!r}; known options: python",
                fields={"option": unknown[0], "known": ["python"]},
            )
        python = options.get("python", sys.executable)
        if not isinstance(python, str):
            raise InvalidInputError(f"python must be a path to an interpreter, got {python!r}")
        return cls(state_dir, lease_ttl_s=lease_ttl_s, python=python)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Only ``gpus``, ``env``, ``working_dir`` and ``cache_dir``, of the right types.

        A queue template may still hold placeholders (``gpus: '{{gpus}}'``): those pass
        here and are checked again once rendered.
        """
        for key in config:
            if key not in ALLOWED_CONFIG_KEYS:
                raise InvalidInputError(
                    f"a local queue's config cannot hold {key!r}; "
                    f"allowed keys: {', '.join(ALLOWED_CONFIG_KEYS)}",
                    fields={"key": key, "allowed": list(ALLOWED_CONFIG_KEYS)},
                )
        gpus = config.get("gpus", 0)
        if not _placeholder(gpus) and (not _whole(gpus) or gpus < 0):
            raise InvalidInputError(f"gpus must be a whole number >= 0, got {gpus!r}")
        env = config.get("env") or {}
        if not isinstance(env, Mapping) and not _placeholder(env):
            raise InvalidInputError(f"env must be a mapping of names to values, got {env!r}")
        for name, value in env.items() if isinstance(env, Mapping) else ():
            if not isinstance(name, str) or not isinstance(value, str | int | float | bool):
                raise InvalidInputError(
                    f"env entry {name!r}: {value!r} must map a name to a string or number"
                )
        for key in ("working_dir", "cache_dir"):
            if key in config and not isinstance(config[key], str):
                raise InvalidInputError(f"{key} must be a path (a string), got {config[key]!r}")

    @classmethod
    def gpu_demand(cls, config: dict[str, Any]) -> int:
        gpus = config.get("gpus", 0)
        return gpus if _whole(gpus) else 0

    async def launch(self, spec: LaunchSpec) -> Handle:
        self.validate_config(spec.config)
        if not spec.command:
            raise InvalidInputError("a local run needs a command")
        run_dir = self._run_dir(spec.run_id, spec.attempt)
        if run_dir is None:
            raise InvalidInputError(
                f"run id {spec.run_id!r} cannot name a folder: use letters, digits, '.', '_', '-'"
            )
        return await asyncio.to_thread(self._launch, spec, run_dir)

    async def poll(self, handle: Handle) -> Observation:
        return await asyncio.to_thread(self._poll, handle)

    async def cancel(self, handle: Handle, grace_s: float = 10.0) -> None:
        await asyncio.to_thread(self._cancel, handle, grace_s)

    async def read_logs(self, handle: Handle, offset: int) -> LogChunk:
        return await asyncio.to_thread(self._read_logs, handle, max(0, offset))

    async def keepalive(self, handle: Handle) -> None:
        await asyncio.to_thread(self._keepalive, handle)

    async def close(self) -> None:
        """Stop the supervisor helper; the supervisors it forked, and their runs, go on."""
        await asyncio.to_thread(self._spawner.close)

    async def release(self, handle: Handle) -> None:
        run_dir = self._run_dir(handle.run_id, handle.attempt)
        if run_dir is not None:
            await asyncio.to_thread(shutil.rmtree, run_dir, True)

    def on_change(self, wake: Callable[[str], None]) -> None:
        self._wake = wake

    async def live_handles(self) -> list[Handle]:
        """Handles of the attempts still running (supervisor alive, no end recorded).

        What a restarted agent adopts; runs that ended meanwhile are found by polling the
        handles the server holds.
        """
        return await asyncio.to_thread(self._live_handles)

    # -- launch ------------------------------------------------------------------------

    def _launch(self, spec: LaunchSpec, run_dir: Path) -> Handle:
        run_dir.mkdir(parents=True, exist_ok=True)
        with _locked(run_dir / ".launch.lock"):  # two launches of one attempt start one run
            existing = sup.read_json(run_dir / sup.HANDLE_FILE)
            if existing is not None and (
                (run_dir / sup.EXIT_FILE).exists() or _supervisor_alive(existing.get("data"))
            ):
                return Handle.from_json(existing)
            cwd = self._working_dir(spec, run_dir)
            env = self._run_env(spec, run_dir)
            _kill_orphan(run_dir)  # a vanished supervisor may have left its command behind
            for stale in (sup.CANCEL_FILE, sup.CHILD_FILE, sup.EXIT_FILE):
                (run_dir / stale).unlink(missing_ok=True)
            try:
                sup.write_json_atomic(run_dir / sup.CONFIG_FILE, spec.run_config)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"the run config is not JSON: {exc}") from exc
            sup.write_json_atomic(run_dir / sup.ENV_FILE, env, mode=0o600)  # may hold secrets
            (run_dir / sup.LEASE_FILE).touch()
            os.utime(run_dir / sup.LEASE_FILE)
            # An agent killed between here and handle.json (microseconds) leaves a supervisor
            # that a later launch does not see; everything else is found again.
            pid = self._start_supervisor(run_dir, cwd, spec.command, spec.run_id)
            start_time = sup.process_start_time(pid)
            if start_time is None and not (run_dir / sup.EXIT_FILE).exists():
                log = (run_dir / sup.SUPERVISOR_LOG).read_text(errors="replace")[-2000:]
                raise BackendError(f"the local supervisor exited at once: {log or 'no output'}")
            handle = Handle(
                backend=self.name,
                run_id=spec.run_id,
                attempt=spec.attempt,
                data={"dir": str(run_dir), "pid": pid, "start_time": start_time},
            )
            sup.write_json_atomic(run_dir / sup.HANDLE_FILE, handle.to_json())
            return handle

    def _start_supervisor(self, run_dir: Path, cwd: Path, command: list[str], run_id: str) -> int:
        request = {
            "run_dir": str(run_dir),
            "grace_s": DEFAULT_GRACE_S,
            "lease_ttl_s": self.lease_ttl_s,
            "cwd": str(cwd),
            "command": command,
        }
        try:
            pid = self._spawner.start(run_id, request)
        except HelperLostError as exc:
            # A supervisor may have been forked that nobody will hear of: an expired lease
            # makes it stop the command at its first tick, and this attempt fails.
            with contextlib.suppress(OSError):
                os.utime(run_dir / sup.LEASE_FILE, (0, 0))
            raise BackendError(f"could not start the local supervisor: {exc}") from exc
        if pid is not None:
            return pid
        return self._spawn_supervisor(run_dir, cwd, command, run_id)

    def _spawn_supervisor(self, run_dir: Path, cwd: Path, command: list[str], run_id: str) -> int:
        """A new interpreter per supervisor: the fallback when the helper cannot be had."""
        args = [str(run_dir), str(DEFAULT_GRACE_S), str(self.lease_ttl_s), str(cwd), *command]
        # Started with SIGTERM blocked (only this worker thread blocks it; the mask is inherited
        # through exec): the supervisor unblocks it once its handler is set, so a cancel that
        # comes before that is handled, not fatal.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            with open(run_dir / sup.SUPERVISOR_LOG, "ab") as log:
                proc = subprocess.Popen(
                    [self.python, "-I", "-S", str(SUPERVISOR_SCRIPT), *args],
                    start_new_session=True,  # a signal to the agent's group must not reach it
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
        except OSError as exc:
            raise BackendError(
                f"could not start the local supervisor with {self.python}: {exc}"
            ) from exc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        # Reap it when it ends, so it leaves no zombie behind in a long-lived agent, and tell
        # the agent at once: the supervisor exits right after writing exit.json.
        threading.Thread(
            target=self._reap, args=(proc, run_id), name=f"reap-supervisor-{proc.pid}", daemon=True
        ).start()
        return proc.pid

    def _reap(self, proc: subprocess.Popen[bytes], run_id: str) -> None:
        proc.wait()
        self._ended(run_id)

    def _ended(self, run_id: str) -> None:
        """A supervisor exited (it writes exit.json first): tell the agent at once."""
        if self._wake is not None:
            self._wake(run_id)

    def _working_dir(self, spec: LaunchSpec, run_dir: Path) -> Path:
        configured = spec.config.get("working_dir")
        if not configured:
            work = run_dir / "work"
            work.mkdir(exist_ok=True)
            return work
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise InvalidInputError(
                f"working_dir {configured!r} is not a folder on this machine; "
                "create it or change the queue's config"
            )
        return path.resolve()

    def _run_env(self, spec: LaunchSpec, run_dir: Path) -> dict[str, str]:
        # The agent's own LAUNCHYARD_* settings (its API key above all) are not the run's:
        # the run gets only what the spec gives it (its id, config, output token).
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHYARD_")}
        env.update({str(k): _env_value(v) for k, v in (spec.config.get("env") or {}).items()})
        env.update({str(k): str(v) for k, v in spec.env.items()})
        env["LAUNCHYARD_RUN_ID"] = spec.run_id
        env["LAUNCHYARD_CONFIG_FILE"] = str(run_dir / sup.CONFIG_FILE)
        # The agent assigns exact devices; an empty value hides every GPU.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in spec.gpu_ids)
        if spec.config.get("cache_dir"):
            cache = Path(spec.config["cache_dir"]).expanduser().resolve()
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InvalidInputError(
                    f"cache_dir {str(cache)!r} cannot be created: {exc}"
                ) from exc
            env["XDG_CACHE_HOME"] = str(cache)
            env["HF_HOME"] = str(cache / "huggingface")
            env["PIP_CACHE_DIR"] = str(cache / "pip")
            env["LAUNCHYARD_CACHE_DIR"] = str(cache)
        return env

    # -- observing and stopping --------------------------------------------------------

    def _poll(self, handle: Handle) -> Observation:
        run_dir = self._run_dir(handle.run_id, handle.attempt)
        if run_dir is None or not run_dir.is_dir():
            return Observation(Phase.LOST, reason=VANISHED)
        # Liveness first, then exit.json: the supervisor writes the end before it exits.
        alive = _supervisor_alive(self._recorded_data(handle, run_dir))
        ended = sup.read_json(run_dir / sup.EXIT_FILE)
        if isinstance(ended, dict):
            return _observation_from_exit(ended)
        if alive:
            return Observation(Phase.RUNNING)
        _kill_orphan(run_dir)  # reported lost, so it must not keep running
        return Observation(Phase.LOST, reason=VANISHED)

    def _cancel(self, handle: Handle, grace_s: float) -> None:
        run_dir = self._run_dir(handle.run_id, handle.attempt)
        if run_dir is None or not run_dir.is_dir() or (run_dir / sup.EXIT_FILE).exists():
            return
        try:
            sup.write_json_atomic(run_dir / sup.CANCEL_FILE, max(0.0, grace_s))
        except OSError:
            return  # the folder was removed meanwhile
        data = self._recorded_data(handle, run_dir)
        if _supervisor_alive(data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(data["pid"]), signal.SIGTERM)
        else:
            _kill_orphan(run_dir)

    def _read_logs(self, handle: Handle, offset: int) -> LogChunk:
        run_dir = self._run_dir(handle.run_id, handle.attempt)
        if run_dir is None:
            return LogChunk(text="", next_offset=offset)
        finished = (run_dir / sup.EXIT_FILE).exists()  # before reading: then the log is whole
        try:
            with open(run_dir / sup.OUTPUT_LOG, "rb") as log:
                log.seek(offset)
                data = log.read(MAX_LOG_CHUNK)
        except OSError:
            return LogChunk(text="", next_offset=offset)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(data, final=False)
        held = len(decoder.getstate()[0])  # an incomplete character, kept for the next call
        if held and finished and len(data) < MAX_LOG_CHUNK:
            text += decoder.decode(b"", final=True)  # the log ends in a broken character
            held = 0
        return LogChunk(text=text, next_offset=offset + len(data) - held)

    def _keepalive(self, handle: Handle) -> None:
        run_dir = self._run_dir(handle.run_id, handle.attempt)
        if run_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.utime(run_dir / sup.LEASE_FILE)

    def _live_handles(self) -> list[Handle]:
        if not self.runs_dir.is_dir():
            return []
        handles = []
        for run_dir in sorted(self.runs_dir.iterdir()):
            record = sup.read_json(run_dir / sup.HANDLE_FILE)
            if (
                isinstance(record, dict)
                and _supervisor_alive(record.get("data"))
                and not (run_dir / sup.EXIT_FILE).exists()  # ended, the supervisor is exiting
            ):
                handles.append(Handle.from_json(record))
        return handles

    # -- helpers -----------------------------------------------------------------------

    def _run_dir(self, run_id: str, attempt: int) -> Path | None:
        """The attempt's folder; None when the names could escape ``runs/``."""
        key = f"{run_id}-{attempt}"
        return self.runs_dir / key if _SAFE_KEY.fullmatch(key) else None

    @staticmethod
    def _recorded_data(handle: Handle, run_dir: Path) -> Any:
        """The folder's own record wins over the caller's copy (a relaunch updates it)."""
        record = sup.read_json(run_dir / sup.HANDLE_FILE)
        return record.get("data") if isinstance(record, dict) else handle.data


def _supervisor_alive(data: Any) -> bool:
    """Whether the recorded supervisor runs: its pid is alive and started when recorded."""
    if not isinstance(data, dict):
        return False
    pid, start_time = data.get("pid"), data.get("start_time")
    if not isinstance(pid, int) or not isinstance(start_time, int):
        return False
    return sup.process_start_time(pid) == start_time


def _kill_orphan(run_dir: Path) -> None:
    """SIGKILL the command's group when its supervisor is gone.

    Skipped when its pid now belongs to another process (a different start time).
    """
    child = sup.read_json(run_dir / sup.CHILD_FILE)
    if not isinstance(child, dict) or not isinstance(child.get("pgid"), int):
        return
    pgid = child["pgid"]
    start_time = sup.process_start_time(pgid)
    if start_time is not None and start_time != child.get("start_time"):
        return
    sup.kill_group(pgid, signal.SIGKILL)


def _observation_from_exit(ended: dict[str, Any]) -> Observation:
    exit_code = ended.get("exit_code")
    reason = str(ended.get("reason") or "")
    if reason == sup.CANCELLED:
        return Observation(Phase.CANCELLED, exit_code=exit_code, reason=reason)
    if exit_code == 0 and reason == "exit code 0":
        return Observation(Phase.SUCCEEDED, exit_code=0, reason=reason)
    if ended.get("signal") == signal.SIGKILL and reason == "killed by signal SIGKILL":
        reason += SIGKILL_HINT
    return Observation(Phase.FAILED, exit_code=exit_code, reason=reason)


def _placeholder(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _env_value(value: Any) -> str:
    """A queue env value as text; booleans as YAML and JSON spell them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
