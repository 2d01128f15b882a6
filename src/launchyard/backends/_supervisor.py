"""Supervisor of one local run attempt: a small stdlib-only program.

The local backend starts one of these per attempt, with ``python -I -S`` in a
session of its own, and this file must therefore import nothing but the
standard library (never ``launchyard``). It starts the run's command in its own
process group and stays with it until the end:

- It is the run's parent, not the agent. The exit status is collected here and
  written to ``exit.json``, so an agent that is SIGKILLed and restarted still
  learns how its runs ended (the agent reads the folder, never ``wait()``s).
- When the command ends, whatever it left in its process group is SIGKILLed
  before the end is recorded: stragglers do not outlive the run (nor hold GPUs).
- Cancel: a ``cancel`` file (holding the grace in seconds) or SIGTERM. The group
  gets SIGTERM, then SIGKILL once the grace has passed.
- Dead-man's switch: the agent touches the ``lease`` file after every heartbeat
  the server accepts. If it is older than 0.75 x the lease TTL, the agent is
  gone or cut off, and the run is stopped like a cancel, before the server
  (which expires leases at the full TTL) can hand the run to another agent. So
  a run never executes twice at once.

Usage: ``python -I -S _supervisor.py RUN_DIR GRACE_S LEASE_TTL_S CWD COMMAND...``;
the run's exact environment is read from ``RUN_DIR/env.json``.

``python -I -S _supervisor.py --serve`` is a small long-lived helper: it reads the same
arguments as JSON lines on stdin and forks a supervisor for each (about 1 ms, where a new
interpreter costs about 25 ms of CPU before the command starts). The forked child calls
``setsid`` and then is exactly the process above: the guarantees do not change.

The local backend imports the helpers and file names below, so both sides agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HANDLE_FILE = "handle.json"
CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
LEASE_FILE = "lease"
CANCEL_FILE = "cancel"
CHILD_FILE = "child.json"
EXIT_FILE = "exit.json"
OUTPUT_LOG = "output.log"
SUPERVISOR_LOG = "supervisor.log"

CANCELLED = "cancelled"
LEASE_LOST = "lease lost: the agent stopped renewing it"

LEASE_FRACTION = 0.75
"""The run is stopped once the lease file is older than this share of the TTL."""
LEASE_GRACE_FRACTION = 0.15
"""A run stopped for a lost lease gets at most this share of the TTL as grace, so it is
dead before the server expires the lease (at 0.75 + 0.15 of the TTL, plus a tick)."""
TICK_S = 0.1
SETTLE_S = 10.0
"""How long to wait for SIGKILLed processes to disappear before recording the end."""


# -- helpers shared with the local backend ------------------------------------------------


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    """Write JSON so that readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 (state) onwards of /proc/<pid>/stat, or None when there is no such process."""
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the name (field 2) may hold spaces


def process_start_time(pid: int) -> int | None:
    """When a running process started (field 22, clock ticks after boot); None if none or zombie.

    Comparing it with a recorded value tells our process from a later one that got its pid.
    """
    fields = _proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def group_running(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies do not count)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                return True
    return False


def kill_group(pgid: int, signum: int) -> None:
    """Signal a process group; silent when it is gone. Never our own group or init's."""
    if pgid <= 1 or pgid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# -- the supervisor -----------------------------------------------------------------------


class _Stop:
    """Set by SIGTERM: the agent (or anyone) asks the run to stop."""

    requested = False

    @classmethod
    def on_sigterm(cls, signum: int, frame: object) -> None:
        cls.requested = True


def _has_exited(pid: int) -> bool:
    """Whether our child has exited, without reaping it.

    The unreaped zombie keeps its pid, and so the group id, from being reused: signalling
    the group afterwards cannot hit an unrelated group.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits; None where the kernel has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3, or not Linux
        return None


def _nap(pidfd: int | None) -> None:
    """Sleep one tick, or less: waking the moment the child exits (a freed GPU is handed on
    at once, not up to a tick later)."""
    if pidfd is None:
        time.sleep(TICK_S)
    else:
        select.select([pidfd], [], [], TICK_S)


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while group_running(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _lease_age_s(run_dir: Path) -> float:
    try:
        return time.time() - (run_dir / LEASE_FILE).stat().st_mtime
    except OSError:  # no lease file (the folder was removed): nobody is renewing it
        return float("inf")


def _cancel_grace_s(run_dir: Path, default: float) -> float:
    try:
        return max(0.0, float((run_dir / CANCEL_FILE).read_text()))
    except (OSError, ValueError):
        return default


def _watch(run_dir: Path, pid: int, grace_s: float, lease_ttl_s: float) -> tuple[str | None, float]:
    """Wait for the end: (None, 0) when the command exited, else (reason, grace) to stop it."""
    pidfd = _pidfd(pid)
    try:
        while not _has_exited(pid):
            if _Stop.requested or (run_dir / CANCEL_FILE).exists():
                return CANCELLED, _cancel_grace_s(run_dir, grace_s)
            if _lease_age_s(run_dir) > LEASE_FRACTION * lease_ttl_s:
                return LEASE_LOST, min(grace_s, LEASE_GRACE_FRACTION * lease_ttl_s)
            _nap(pidfd)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return None, 0.0


def write_exit(run_dir: Path, returncode: int | None, reason: str | None) -> None:
    """Record the end; a signal death reads as exit code 128 + signal number, as in shells."""
    signum: int | None = None
    exit_code: int | None = None
    if returncode is None:  # the command never started
        default_reason = "never started"
    elif returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        exit_code, default_reason = 128 + signum, f"killed by signal {name}"
    else:
        exit_code, default_reason = returncode, f"exit code {returncode}"
    record = {
        "exit_code": exit_code,
        "signal": signum,
        "reason": reason or default_reason,
        "finished_at": datetime.now(UTC).isoformat(),
    }
    write_json_atomic(run_dir / EXIT_FILE, record)


def supervise(
    run_dir: Path, grace_s: float, lease_ttl_s: float, cwd: str, command: list[str]
) -> None:
    # The backend starts us with SIGTERM blocked (a mask survives exec): a cancel sent while
    # Python was still starting waits here, and the command inherits the unblocked mask.
    signal.signal(signal.SIGTERM, _Stop.on_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if _Stop.requested or (run_dir / CANCEL_FILE).exists():
        write_exit(run_dir, None, CANCELLED)  # cancelled before it started
        return
    env = json.loads((run_dir / ENV_FILE).read_text())

    # The command records itself (child.json) before it execs: a supervisor killed between
    # the fork and its own write would otherwise leave a command nobody can find to stop.
    def record_self() -> None:  # in the child, after setsid; the supervisor is single-threaded
        pid = os.getpid()
        write_json_atomic(
            run_dir / CHILD_FILE, {"pid": pid, "pgid": pid, "start_time": process_start_time(pid)}
        )

    with open(run_dir / OUTPUT_LOG, "ab") as out:
        try:
            child = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to signal as a whole
                preexec_fn=record_self,
            )
        except OSError as exc:
            out.write(f"launchyard: could not start the command: {exc}\n".encode())
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            write_exit(run_dir, code, f"could not start the command: {exc}")
            return
    pgid = child.pid
    try:
        reason, stop_grace_s = _watch(run_dir, child.pid, grace_s, lease_ttl_s)
        if reason is not None:
            kill_group(pgid, signal.SIGTERM)
            _wait_group_gone(pgid, stop_grace_s)
    except BaseException as exc:  # never leave the run without its supervisor
        kill_group(pgid, signal.SIGKILL)
        write_exit(run_dir, child.wait(), f"the local supervisor failed: {exc!r}")
        raise
    kill_group(pgid, signal.SIGKILL)
    _wait_group_gone(pgid, SETTLE_S)
    write_exit(run_dir, child.wait(), reason)


# -- the helper that forks supervisors (``--serve``) -----------------------------------------


def _send(message: dict[str, Any]) -> None:
    """One JSON line to the backend on stdout; silent when it is gone (it then closes stdin)."""
    with contextlib.suppress(OSError):
        os.write(1, (json.dumps(message) + "\n").encode())


def _become_supervisor(request: dict[str, Any], private_fds: tuple[int, ...]) -> None:
    """In the forked child: the same process a fresh ``python -I -S`` start would give.

    ``private_fds`` are the helper's own; closing the last of them (the write end of the
    sync pipe) tells the helper that this process has its own session.
    """
    code = 1
    try:
        os.setsid()  # its own session: signals to the helper's or the agent's group miss it
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in private_fds:
            os.close(fd)
        run_dir = Path(request["run_dir"])
        log = os.open(run_dir / SUPERVISOR_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the helper's pipes are not the run's
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        supervise(
            run_dir,
            float(request["grace_s"]),
            float(request["lease_ttl_s"]),
            str(request["cwd"]),
            list(request["command"]),
        )
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    """Fork a supervisor per request line on stdin; answer ``{"pid"}`` (or ``{"error"}``), and
    ``{"exited", "run_id"}`` once a supervisor has ended. Exits when stdin closes (the agent
    is gone): the supervisors, in their own sessions, go on without it."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a handler, so it wakes select
    signal.set_wakeup_fd(wake_w)
    runs: dict[int, str] = {}
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            _reap(runs)
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:
            return 0
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                request = json.loads(line)
                pid = _fork_supervisor(request, (wake_r, wake_w))
            except Exception as exc:  # noqa: BLE001 - a bad request must not end the helper
                _send({"error": repr(exc)})
                continue
            runs[pid] = str(request.get("run_id", ""))
            _send({"pid": pid})


def _fork_supervisor(request: dict[str, Any], private_fds: tuple[int, int]) -> int:
    """Fork; answer once the child has its own session, so the caller never sees it in ours."""
    sync_r, sync_w = os.pipe()
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            pid = os.fork()  # with SIGTERM blocked, as the backend's Popen does
            if pid == 0:
                _become_supervisor(request, (*private_fds, sync_r, sync_w))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(sync_w)
        os.read(sync_r, 1)  # EOF once the child has called setsid (or is gone)
    finally:
        os.close(sync_r)
    return pid


def _reap(runs: dict[int, str]) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"exited": pid, "run_id": runs.pop(pid, "")})


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    run_dir, grace_s, lease_ttl_s, cwd, *command = argv
    supervise(Path(run_dir), float(grace_s), float(lease_ttl_s), cwd, command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
