"""The local backend's side of ``_supervisor.py --serve``: supervisors forked, not exec'd.

A new ``python -I -S`` per attempt costs about 25 ms of CPU before the run's command
starts; forking it from one long-lived helper costs about 1 ms. The helper is started on
first use, in a session of its own and without the agent's ``LAUNCHYARD_*`` settings, and
ends when its stdin closes (the backend closes, or the agent dies): the supervisors it
forked run on in their own sessions, exactly as spawned ones do.

One request at a time: write a JSON line, read ``{"pid"}`` back. A reader thread also
passes on ``{"exited", "run_id"}`` lines, so the agent hears of an end at once.

If the helper is gone before a request is written, it is started again; if that fails,
``start`` returns None and the backend spawns the supervisor itself, as before. If it dies
after the request was written and before the answer, a supervisor may or may not have
been forked: that is :class:`HelperLostError`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("launchyard.backends.local")

REPLY_TIMEOUT_S = 10.0
"""A fork is answered in milliseconds; this long means the helper is stuck."""


class HelperLostError(Exception):
    """The helper died between a request and its answer."""


class Spawner:
    def __init__(
        self, python: str, script: Path, log_path: Path, on_exit: Callable[[str], None]
    ) -> None:
        self.python = python
        self.script = script
        self.log_path = log_path
        self.on_exit = on_exit
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def start(self, run_id: str, request: dict[str, Any]) -> int | None:
        """Fork a supervisor; its pid, or None when the helper cannot be had."""
        with self._lock:
            proc = self._running() or self._launch_helper()
            if proc is None or proc.stdin is None:
                return None
            line = json.dumps({**request, "run_id": run_id}).encode() + b"\n"
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except OSError:  # it died before it read anything: nothing was forked
                self._discard(proc)
                return None
            try:
                reply = self._replies.get(timeout=REPLY_TIMEOUT_S)
            except queue.Empty:
                reply = None
            if reply is None:
                self._discard(proc)
                raise HelperLostError("the supervisor helper stopped answering")
            if "pid" not in reply:
                log.warning("the supervisor helper could not fork: %s", reply.get("error"))
                return None
            return int(reply["pid"])

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._discard(self._proc)

    # -- the helper process ------------------------------------------------------------

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            log.warning(
                "the supervisor helper exited (%s): starting it again", self._proc.returncode
            )
            self._discard(self._proc)
        return None

    def _launch_helper(self) -> subprocess.Popen[bytes] | None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHYARD_")}
        try:
            with open(self.log_path, "ab") as err:
                proc = subprocess.Popen(
                    [self.python, "-I", "-S", str(self.script), "--serve"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                    cwd="/",
                    start_new_session=True,  # a Ctrl-C to the agent's group must not reach it
                )
        except OSError as exc:
            log.warning("could not start the supervisor helper: %s", exc)
            return None
        self._replies = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(
            target=self._read,
            args=(proc.stdout, self._replies),
            name=f"supervisor-helper-{proc.pid}",
            daemon=True,
        ).start()
        self._proc = proc
        return proc

    def _read(self, stdout: IO[bytes], replies: queue.Queue[dict[str, Any] | None]) -> None:
        with stdout:
            for line in stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "exited" not in message:
                    replies.put(message)
                    continue
                try:
                    self.on_exit(str(message.get("run_id", "")))
                except Exception:  # a wake-up is an optimisation: the agent polls anyway
                    log.exception("waking the agent failed")
        replies.put(None)  # the helper is gone: a request waiting for its answer fails

    def _discard(self, proc: subprocess.Popen[bytes]) -> None:
        """Close its stdin (it exits on EOF) and collect it; never its supervisors. Its stdout
        is the reader thread's to close, at EOF."""
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._proc is proc:
            self._proc = None
