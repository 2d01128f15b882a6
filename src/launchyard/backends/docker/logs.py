"""A container's output, mirrored into a file so every read is cheap and exact.

Docker only serves a container's log from the start (or from a time, which can
split or repeat lines written in the same instant), so slicing the whole log at
each read would cost the full log size every 0.2 s. Instead one thread follows
the log stream (``docker logs --follow``) and appends it to ``output.log``;
:meth:`LogMirror.read` then serves bytes from the file at an offset.

The stream of a container's log is the same bytes in the same order each time it
is read, so a follower that starts over (a restarted agent, a dropped connection)
skips as many bytes as the file already holds and appends the rest: nothing is
lost or repeated. An advisory lock on ``output.lock`` lets only one follower, in
any process, append at a time. ``output.done`` marks a file that holds the whole
output of a container that has ended.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("launchyard.backends.docker")

MAX_LOG_CHUNK = 1024 * 1024
"""Most bytes of output returned by one read."""
RETRY_S = 0.2

OUTPUT_FILE = "output.log"
LOCK_FILE = "output.lock"
DONE_FILE = "output.done"


class LogMirror:
    """Follows one container's log into ``folder/output.log`` on a daemon thread.

    ``open_stream()`` returns the SDK's cancellable log stream (follow mode);
    ``has_ended()`` says whether the container has stopped for good (or is gone).
    Both are called on the mirror's thread only.
    """

    def __init__(
        self,
        folder: Path,
        open_stream: Callable[[], Any],
        has_ended: Callable[[], bool],
        name: str,
    ) -> None:
        self.folder = folder
        self._open_stream = open_stream
        self._has_ended = has_ended
        self._stopping = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._follow, name=f"logs-{name}", daemon=True)

    @property
    def done(self) -> bool:
        return (self.folder / DONE_FILE).exists()

    def start(self) -> None:
        if not self.done:
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout_s: float) -> None:
        """Wait until the whole output is in the file (the container has ended)."""
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def stop(self) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()  # wakes the thread from its blocking read

    def read(self, offset: int) -> tuple[str, int]:
        """Text from byte ``offset`` and the offset after it; an incomplete character waits."""
        finished = self.done  # before reading: then the file is whole
        try:
            with open(self.folder / OUTPUT_FILE, "rb") as fh:
                fh.seek(offset)
                data = fh.read(MAX_LOG_CHUNK)
        except OSError:
            return "", offset
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(data, final=False)
        held = len(decoder.getstate()[0])
        if held and finished and len(data) < MAX_LOG_CHUNK:
            text += decoder.decode(b"", final=True)  # the output ends in a broken character
            held = 0
        return text, offset + len(data) - held

    # -- the follower thread ---------------------------------------------------------------

    def _follow(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / LOCK_FILE, "a") as lock:
                while not self._lock(lock):  # another follower writes: wait for it to end
                    if self._stopping.wait(RETRY_S):
                        return
                while not self._stopping.is_set() and not self.done:
                    self._copy_once()
                    # Docker ends a followed stream once a stopped container's log is sent
                    # whole, so an ended container's file is now complete.
                    if self._has_ended():
                        (self.folder / DONE_FILE).touch()
                        return
                    self._stopping.wait(RETRY_S)
        except Exception:  # a daemon thread must not die noisily; reads return what is there
            log.exception("following the logs in %s failed", self.folder)

    @staticmethod
    def _lock(lock: Any) -> bool:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _copy_once(self) -> None:
        """Stream the log from its start, skipping what the file holds, appending the rest."""
        path = self.folder / OUTPUT_FILE
        skip = path.stat().st_size if path.exists() else 0
        try:
            self._stream = self._open_stream()
        except Exception as exc:  # the container is gone or the engine is down: retry later
            log.debug("cannot open the log stream for %s: %s", self.folder.name, exc)
            return
        try:
            with open(path, "ab") as out:
                for chunk in self._stream:
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    out.write(chunk[skip:])
                    out.flush()
                    skip = 0
        except Exception as exc:  # a dropped connection: the next pass starts over
            log.debug("the log stream for %s broke: %s", self.folder.name, exc)
        finally:
            stream, self._stream = self._stream, None
            with contextlib.suppress(Exception):
                stream.close()
