"""The mock API server's state: objects, resource versions, the event history and
the two controllers the backend relies on (the Job controller and the garbage
collector).

Everything here is guarded by one condition variable; watches wait on it. Objects
are plain JSON dicts exactly as the real API serves them (camelCase keys).
"""

from __future__ import annotations

import copy
import re
import secrets
import string
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

KINDS = {
    "jobs": ("batch/v1", "Job", "jobs.batch"),
    "pods": ("v1", "Pod", "pods"),
    "configmaps": ("v1", "ConfigMap", "configmaps"),
    "events": ("v1", "Event", "events"),
}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ApiError(Exception):
    """Becomes a ``Status`` answer with this code and reason."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 0
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.events: list[tuple[int, str, str, str, Obj]] = []  # rv, kind, ns, type, object
        self.compacted_rv = 0  # watches from before this answer 410 Gone
        self.logs: dict[tuple[str, str], bytearray] = {}  # (ns, pod) -> output
        self.on_pod_created: list[Callable[[Obj], None]] = []
        self.on_pod_deleted: list[Callable[[Obj], None]] = []

    # -- primitives (callers hold self.cond) -------------------------------------------------

    def _emit(self, kind: str, ns: str, type_: str, obj: Obj) -> None:
        self.events.append((self.rv, kind, ns, type_, copy.deepcopy(obj)))
        self.cond.notify_all()

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _put(self, kind: str, ns: str, obj: Obj, type_: str) -> Obj:
        self._bump(obj)
        self.objects[(kind, ns, obj["metadata"]["name"])] = obj
        self._emit(kind, ns, type_, obj)
        return obj

    def _not_found(self, kind: str, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{KINDS[kind][2]} "{name}" not found')

    # -- the API verbs -----------------------------------------------------------------------

    def create(self, kind: str, ns: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(
                422,
                "Invalid",
                f"{KINDS[kind][1]} is invalid: metadata.name: "
                "Required value: name or generateName is required",
            )
        if not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
            raise ApiError(
                422,
                "Invalid",
                f'{KINDS[kind][1]}.{KINDS[kind][0]} "{name}" is '
                "invalid: metadata.name: Invalid value: a lowercase RFC 1123 subdomain",
            )
        if kind == "jobs":
            _validate_job(obj)
        with self.cond:
            if (kind, ns, name) in self.objects:
                raise ApiError(409, "AlreadyExists", f'{KINDS[kind][2]} "{name}" already exists')
            obj["apiVersion"], obj["kind"] = KINDS[kind][0], KINDS[kind][1]
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            meta.setdefault("labels", {})
            if kind == "jobs":
                _default_job(obj)
            self._put(kind, ns, obj, "ADDED")
            if kind == "jobs" and not obj["spec"].get("suspend"):
                self._new_pod(obj)
            if kind == "pods":
                for hook in self.on_pod_created:
                    hook(obj)
            return copy.deepcopy(obj)

    def get(self, kind: str, ns: str, name: str) -> Obj:
        with self.cond:
            obj = self.objects.get((kind, ns, name))
            if obj is None:
                raise self._not_found(kind, name)
            return copy.deepcopy(obj)

    def list(self, kind: str, ns: str, selector: str | None) -> tuple[list[Obj], int]:
        with self.cond:
            items = [
                copy.deepcopy(o)
                for (k, n, _), o in sorted(self.objects.items())
                if k == kind and n == ns and matches(o["metadata"]["labels"], selector)
            ]
            return items, self.rv

    def update(self, kind: str, ns: str, name: str, change: Callable[[Obj], None]) -> Obj:
        with self.cond:
            obj = self.objects.get((kind, ns, name))
            if obj is None:
                raise self._not_found(kind, name)
            change(obj)
            self._put(kind, ns, obj, "MODIFIED")
            if kind == "pods":
                self._sync_owner_job(obj)
            return copy.deepcopy(obj)

    def delete(self, kind: str, ns: str, name: str, propagation: str | None) -> Obj:
        """Delete now; dependents go too (Background, Foreground) or lose their owner (Orphan).

        Jobs default to Orphan, as in the real API (``batch/v1`` keeps that legacy default).
        """
        with self.cond:
            obj = self.objects.pop((kind, ns, name), None)
            if obj is None:
                raise self._not_found(kind, name)
            obj["metadata"]["deletionTimestamp"] = now()
            self._bump(obj)
            self._emit(kind, ns, "DELETED", obj)
            if kind == "pods":
                for hook in self.on_pod_deleted:
                    hook(obj)
            policy = propagation or ("Orphan" if kind == "jobs" else "Background")
            uid = obj["metadata"]["uid"]
            for (dkind, dns, dname), dep in list(self.objects.items()):
                owners = dep["metadata"].get("ownerReferences") or []
                if dns != ns or not any(o.get("uid") == uid for o in owners):
                    continue
                if policy == "Orphan":
                    dep["metadata"]["ownerReferences"] = [o for o in owners if o.get("uid") != uid]
                    self._put(dkind, dns, dep, "MODIFIED")
                else:
                    self.delete(dkind, dns, dname, "Background")
            return obj

    def watch_events(
        self, kind: str, ns: str, selector: str | None, after: int
    ) -> list[tuple[int, str, Obj]]:
        """Events newer than ``after`` (caller holds the lock); ApiError 410 if compacted."""
        if after < self.compacted_rv:
            raise ApiError(
                410, "Expired", f"too old resource version: {after} ({self.compacted_rv})"
            )
        return [
            (rv, t, o)
            for rv, k, n, t, o in self.events
            if rv > after
            and k == kind
            and n == ns
            and matches(o["metadata"].get("labels") or {}, selector)
        ]

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older watches get 410."""
        with self.cond:
            self.events.clear()
            self.compacted_rv = self.rv

    # -- the Job controller ------------------------------------------------------------------

    def _new_pod(self, job: Obj) -> None:
        meta, tmpl = job["metadata"], job["spec"]["template"]
        suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
        pod = {
            "metadata": {
                "name": f"{meta['name']}-{suffix}",
                "labels": dict(tmpl.get("metadata", {}).get("labels") or {}),
                "annotations": dict(tmpl.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": copy.deepcopy(tmpl["spec"]),
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        }
        self.create("pods", meta["namespace"], pod)

    def _sync_owner_job(self, pod: Obj) -> None:
        owners = pod["metadata"].get("ownerReferences") or []
        ns = pod["metadata"]["namespace"]
        job = next(
            (
                o
                for (k, n, _), o in self.objects.items()
                if k == "jobs"
                and n == ns
                and any(r.get("uid") == o["metadata"]["uid"] for r in owners)
            ),
            None,
        )
        if job is not None:
            self.sync_job(job)

    def sync_job(self, job: Obj) -> None:
        """Count the Job's pods into its status; finish it or start a replacement pod."""
        uid, ns = job["metadata"]["uid"], job["metadata"]["namespace"]
        pods = [
            o
            for (k, n, _), o in self.objects.items()
            if k == "pods"
            and n == ns
            and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]
        status, spec = job.setdefault("status", {}), job["spec"]
        if any(c["type"] in ("Complete", "Failed") for c in status.get("conditions", [])):
            return
        phases = [p["status"].get("phase") for p in pods]
        status.update(
            active=sum(p in ("Pending", "Running") for p in phases),
            succeeded=phases.count("Succeeded"),
            failed=phases.count("Failed"),
        )
        status.setdefault("startTime", now())
        if status["succeeded"] >= spec.get("completions", 1):
            self._finish(
                job,
                [
                    (
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                    ("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                ],
            )
        elif status["failed"] > spec.get("backoffLimit", 6):
            msg = "Job has reached the specified backoff limit"
            self._finish(
                job,
                [
                    ("FailureTarget", "BackoffLimitExceeded", msg),
                    ("Failed", "BackoffLimitExceeded", msg),
                ],
            )
        else:
            self._put("jobs", ns, job, "MODIFIED")
            if status["failed"] and not status["active"] and not status["succeeded"]:
                self._new_pod(job)

    def _finish(self, job: Obj, conditions: list[tuple[str, str, str]]) -> None:
        status = job["status"]
        status["active"] = 0
        status.setdefault("conditions", []).extend(
            {
                "type": t,
                "status": "True",
                "reason": r,
                "message": m,
                "lastProbeTime": now(),
                "lastTransitionTime": now(),
            }
            for t, r, m in conditions
        )
        if conditions[-1][0] == "Complete":
            status["completionTime"] = now()
        self._put("jobs", job["metadata"]["namespace"], job, "MODIFIED")


def _validate_job(job: Obj) -> None:
    """The checks the real API does that a wrong manifest would trip first."""
    name = job["metadata"]["name"]

    def invalid(path: str, what: str) -> ApiError:
        return ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: {path}: {what}')

    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise invalid("metadata.name", "must be a DNS-1123 label of at most 63 characters")
    pod_spec = (((job.get("spec") or {}).get("template") or {}).get("spec")) or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        raise invalid("spec.template.spec.containers", "Required value")
    for i, container in enumerate(containers):
        if not container.get("name"):
            raise invalid(f"spec.template.spec.containers[{i}].name", "Required value")
        if not container.get("image"):
            raise invalid(f"spec.template.spec.containers[{i}].image", "Required value")
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        raise invalid(
            "spec.template.spec.restartPolicy", 'Required value: valid values: "OnFailure", "Never"'
        )


def _default_job(job: Obj) -> None:
    """Defaults and the controller's labels, as the API server adds them."""
    spec, meta = job["spec"], job["metadata"]
    for key, value in (
        ("backoffLimit", 6),
        ("completions", 1),
        ("parallelism", 1),
        ("suspend", False),
        ("completionMode", "NonIndexed"),
    ):
        spec.setdefault(key, value)
    labels = {
        "batch.kubernetes.io/controller-uid": meta["uid"],
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": meta["uid"],
        "job-name": meta["name"],
    }
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}}
    tmeta = spec["template"].setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
    job["status"] = {}
