"""Jobs and pods kept current by watches, so polling a run costs no API call.

One :class:`Feed` per kind (Jobs, Pods) lists the objects with launchyard's
label once, then watches from the list's ``resourceVersion``. Each event
updates the cache and the feed's resourceVersion, so:

- a dropped connection (or the server ending the watch after
  ``timeoutSeconds``) resumes from the last version seen, missing nothing;
- ``410 Gone`` (the version was compacted away) lists again from scratch.

The feeds run in daemon threads (the client is blocking); readers take a lock.
While a feed is not connected, :meth:`Feeds.lookup` answers None and the backend
falls back to a GET.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from launchyard.backends.kubernetes import api
from launchyard.errors import BackendError

log = logging.getLogger("launchyard.backends.kubernetes")

Obj = dict[str, Any]
WATCH_TIMEOUT_S = 60
"""The server ends each watch after this; the feed resumes from where it was."""
RETRY_MAX_S = 5.0


class Feed:
    """The live objects of one kind matching a label selector."""

    def __init__(
        self, kind: str, list_fn: Callable[..., Any], namespace: str, selector: str
    ) -> None:
        self.kind, self.list_fn, self.namespace, self.selector = kind, list_fn, namespace, selector
        self.objects: dict[str, Obj] = {}
        self.deleted: dict[str, Obj] = {}
        self.resource_version: str | None = None
        self.connected = False
        self.relists = 0
        self.lock = threading.Condition()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"k8s-watch-{kind}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:  # unblock a read in progress
            try:
                response.shutdown()
            except Exception:  # noqa: BLE001 - older urllib3: closing is enough
                response.close()

    # -- reading -------------------------------------------------------------------------

    def get(self, name: str) -> tuple[bool, Obj | None]:
        """(known, object): known is False while the feed cannot vouch for ``name``."""
        with self.lock:
            if name in self.objects:
                return True, self.objects[name]
            if name in self.deleted:
                return self.connected, None
            return False, None

    def matching(self, labels: dict[str, str]) -> list[Obj]:
        with self.lock:
            return [
                o
                for o in self.objects.values()
                if labels.items() <= (o["metadata"].get("labels") or {}).items()
            ]

    def put(self, obj: Obj) -> None:
        """Record an object this process just created or read, unless the feed has newer."""
        with self.lock:
            name = obj["metadata"]["name"]
            held = self.objects.get(name)
            if held is None or _newer(obj, held):
                self.objects[name] = obj
                self.deleted.pop(name, None)

    def wait_synced(self, timeout_s: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.connected, timeout_s)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                self._watch()
                delay = 0.1
            except api.GoneError:
                log.info("watch on %s expired (410 Gone); listing again", self.kind)
                self.resource_version = None
            except Exception as exc:  # noqa: BLE001 - a dropped watch is retried, never fatal
                with self.lock:
                    self.connected = False
                if self._stop.is_set():
                    return
                log.warning("watch on %s dropped (%s); resuming in %.1fs", self.kind, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _relist(self) -> None:
        data = api.call(
            self.list_fn, self.namespace, label_selector=self.selector, what=f"listing {self.kind}"
        )
        with self.lock:
            self.objects = {o["metadata"]["name"]: o for o in data.get("items") or []}
            self.deleted.clear()
            self.resource_version = str(data["metadata"]["resourceVersion"])
            self.relists += 1
            self.lock.notify_all()

    def _watch(self) -> None:
        k8s = api.sdk()
        try:
            self._response = self.list_fn(
                self.namespace,
                label_selector=self.selector,
                watch=True,
                resource_version=self.resource_version,
                timeout_seconds=WATCH_TIMEOUT_S,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(5.0, WATCH_TIMEOUT_S + 15.0),
            )
        except k8s.client.ApiException as exc:
            raise api.translate(exc, f"watching {self.kind}") from exc
        with self.lock:
            self.connected = True
            self.lock.notify_all()
        try:
            for line in k8s.watch.watch.iter_resp_lines(self._response):
                if self._stop.is_set():
                    return
                if line.strip():
                    self._apply(json.loads(line))
        finally:
            response, self._response = self._response, None
            response.release_conn()

    def _apply(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            message = f"watching {self.kind}: {obj.get('reason')}: {obj.get('message')}"
            raise (api.GoneError if obj.get("code") == 410 else BackendError)(message)
        meta = obj.get("metadata") or {}
        with self.lock:
            if kind in ("ADDED", "MODIFIED"):
                self.objects[meta["name"]] = obj
                self.deleted.pop(meta["name"], None)
            elif kind == "DELETED":
                self.objects.pop(meta["name"], None)
                self.deleted[meta["name"]] = obj
            if meta.get("resourceVersion"):  # BOOKMARK carries only this
                self.resource_version = str(meta["resourceVersion"])
            self.lock.notify_all()


def _newer(a: Obj, b: Obj) -> bool:
    ra, rb = a["metadata"].get("resourceVersion", ""), b["metadata"].get("resourceVersion", "")
    if str(ra).isdigit() and str(rb).isdigit():
        return int(ra) > int(rb)
    return True  # opaque versions: the fresher read wins


class Feeds:
    """The Job and Pod feeds of one backend, started on first use."""

    def __init__(self, batch: Any, core: Any, namespace: str, selector: str) -> None:
        self.jobs = Feed("jobs", batch.list_namespaced_job, namespace, selector)
        self.pods = Feed("pods", core.list_namespaced_pod, namespace, selector)
        self._started = False
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self.jobs.start()
                self.pods.start()

    def lookup(
        self, job_name: str, pod_labels: dict[str, str]
    ) -> tuple[Obj | None, list[Obj]] | None:
        """(job, pods) from the cache, or None when it cannot tell (then GET)."""
        self.ensure_started()
        if not (self.jobs.connected and self.pods.connected):
            return None
        known, job = self.jobs.get(job_name)
        if not known:
            return None
        return job, self.pods.matching(pod_labels)

    def stop(self) -> None:
        self.jobs.stop()
        self.pods.stop()
