"""``KubernetesBackend``: each run attempt is a ``batch/v1`` Job.

- launch: build the Job from the queue's Job spec (``manifest.py``), create it,
  then the ConfigMap holding the run config, owned by the Job. The Job's name
  comes from the run id and attempt, so a second launch gets 409 AlreadyExists
  and adopts the Job instead of starting the run twice.
- poll: Jobs and pods are watched (``watch.py``); polling reads that cache and
  maps it to a phase (``states.py``), with a GET when the watch is not up.
- logs: the newest pod's log from the offset already returned (``logs.py``).
- cancel: delete the Job with ``propagationPolicy=Background`` so its pods and
  ConfigMap go too (the Job API's own default would orphan them).

GPUs are placed by the cluster's scheduler (``assigns_gpus = False``): a run asks
for ``nvidia.com/gpu`` in its limits and waits, PENDING with the scheduler's
reason, until a node has them free.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, ClassVar

from launchyard.backends.base import Backend, Handle, LaunchSpec, LogChunk, Observation, Phase
from launchyard.backends.kubernetes import api, manifest, states
from launchyard.backends.kubernetes.logs import LogReader
from launchyard.backends.kubernetes.watch import Feeds
from launchyard.errors import (
    BackendError,
    ConflictError,
    InvalidInputError,
    LaunchyardError,
    NotFoundError,
)

OPTIONS = (
    "namespace",
    "context",
    "kubeconfig",
    "in_cluster",
    "ttl_seconds_after_finished",
    "cache_pvc",
    "cache_path",
)
DEFAULT_TTL_S = 3600
FINISHED = ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget")


class KubernetesBackend(Backend):
    """Runs attempts as Kubernetes Jobs in one namespace."""

    name: ClassVar[str] = "kubernetes"
    assigns_gpus: ClassVar[bool] = False

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        *,
        ttl_s: int | None = DEFAULT_TTL_S,
        cache: dict[str, str] | None = None,
    ) -> None:
        k8s = api.sdk()
        self.api_client = api_client
        self.namespace = namespace
        self.ttl_s = ttl_s
        self.cache = cache
        self.batch = k8s.client.BatchV1Api(api_client)
        self.core = k8s.client.CoreV1Api(api_client)
        self.feeds = Feeds(self.batch, self.core, namespace, manifest.MANAGED_SELECTOR)
        self._cancelled: set[str] = set()
        self.logs = LogReader(self.core, namespace)
        self._last: dict[str, Observation] = {}

    @classmethod
    def create(
        cls, *, state_dir: Path, lease_ttl_s: float, options: dict[str, Any]
    ) -> KubernetesBackend:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidInputError(
                f"backends.kubernetes: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(OPTIONS)}"
            )
        cache = None
        if options.get("cache_pvc"):
            cache = {
                "pvc": str(options["cache_pvc"]),
                "path": str(options.get("cache_path") or manifest.DEFAULT_CACHE_PATH),
            }
        ttl = options.get("ttl_seconds_after_finished", DEFAULT_TTL_S)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
            raise InvalidInputError(
                f"backends.kubernetes.ttl_seconds_after_finished: expected seconds >= 0 "
                f"(or null to keep finished Jobs), got {ttl!r}"
            )
        api_client, namespace = api.connect(options)
        return cls(api_client, namespace, ttl_s=ttl, cache=cache)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        manifest.check_config(config)

    @classmethod
    def gpu_demand(cls, config: dict[str, Any]) -> int:
        return manifest.gpu_demand(config)

    # -- the interface -----------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> Handle:
        self.check_config(spec.config)
        job, config_map = manifest.build(spec, ttl_s=self.ttl_s, cache=self.cache)
        return await asyncio.to_thread(self._launch, spec, job, config_map)

    async def poll(self, handle: Handle) -> Observation:
        job_name = str(handle.data["job"])
        found = self.feeds.lookup(job_name, self._pod_labels(handle))
        obs = None if found is None else self._observe(handle, *found)
        if obs is None or obs.phase.is_terminal:
            # The Job and Pod watches are separate streams, so the cache may hold a Job's
            # verdict before the pod update that explains it: an end is reported once, so
            # confirm it against the API first.
            try:
                obs = self._observe(handle, *await asyncio.to_thread(self._read, handle))
            except BackendError as exc:  # the API is away for now: say so, ask again later
                last = self._last.get(job_name)
                if last is not None and not last.phase.is_terminal:
                    return last
                return Observation(Phase.PENDING, reason=f"cannot tell yet: {exc.message}")
        self._last[job_name] = obs
        return obs

    def _observe(
        self, handle: Handle, job: dict[str, Any] | None, pods: list[dict[str, Any]]
    ) -> Observation:
        job, pods = self._own(handle, job, pods)
        gone = job is None or bool(job["metadata"].get("deletionTimestamp"))
        cancelled = gone and str(handle.data["job"]) in self._cancelled
        return states.observe(job, pods, cancelled=cancelled)

    async def cancel(self, handle: Handle, grace_s: float = 10.0) -> None:
        self._cancelled.add(str(handle.data["job"]))
        await asyncio.to_thread(self._delete, handle)

    async def read_logs(self, handle: Handle, offset: int) -> LogChunk:
        return await asyncio.to_thread(self._read_logs, handle, max(0, offset))

    async def release(self, handle: Handle) -> None:
        """Delete a Job that Kubernetes has not finished itself (image pull failure,
        preemption, lost); finished ones stay for ``ttlSecondsAfterFinished``."""
        job_name = str(handle.data["job"])
        found = self.feeds.lookup(job_name, self._pod_labels(handle))
        with contextlib.suppress(LaunchyardError):  # best effort: the TTL cleans up
            if found is None:
                found = await asyncio.to_thread(self._read, handle)
            job = found[0]
            finished = job is not None and any(
                c.get("type") in FINISHED and c.get("status") == "True"
                for c in (job.get("status") or {}).get("conditions") or []
            )
            if job is not None and not finished:
                await asyncio.to_thread(self._delete, handle)
        self._last.pop(job_name, None)
        self.logs.forget(job_name)
        self._cancelled.discard(job_name)

    async def live_handles(self) -> list[Handle]:
        """Handles of this namespace's launchyard Jobs that have not finished: what a
        restarted agent adopts (by label)."""
        return await asyncio.to_thread(self._live_handles)

    async def close(self) -> None:
        self.feeds.stop()
        await asyncio.to_thread(self.api_client.close)

    # -- blocking work (runs in threads) -----------------------------------------------

    def _launch(self, spec: LaunchSpec, job: dict[str, Any], config_map: dict[str, Any]) -> Handle:
        self.feeds.ensure_started()
        name = job["metadata"]["name"]
        try:
            created = api.call(
                self.batch.create_namespaced_job, self.namespace, job, what=f"creating Job {name}"
            )
        except ConflictError:  # a launch of this attempt already made it: adopt it
            created = api.call(
                self.batch.read_namespaced_job, name, self.namespace, what=f"reading Job {name}"
            )
            owner = (created["metadata"].get("labels") or {}).get("launchyard.run-id")
            if owner != manifest.label_value(spec.run_id):
                raise BackendError(
                    f"a Job named {name} already exists in namespace {self.namespace} and "
                    f"belongs to run {owner!r}, not {spec.run_id}; delete it or rename it"
                ) from None
        self.feeds.jobs.put(created)
        try:
            api.call(
                self.core.create_namespaced_config_map,
                self.namespace,
                manifest.owned_by(config_map, created),
                what=f"creating ConfigMap {config_map['metadata']['name']}",
            )
        except ConflictError:
            pass  # made by the first launch of this attempt
        except LaunchyardError:
            self._delete_job(name)  # its pod would wait for the ConfigMap forever
            raise
        return Handle(
            backend=self.name,
            run_id=spec.run_id,
            attempt=spec.attempt,
            data={
                "namespace": self.namespace,
                "job": name,
                "uid": created["metadata"]["uid"],
                "config_map": config_map["metadata"]["name"],
            },
        )

    def _read(self, handle: Handle) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        job_name = str(handle.data["job"])
        try:
            job = api.call(
                self.batch.read_namespaced_job,
                job_name,
                self.namespace,
                what=f"reading Job {job_name}",
            )
        except NotFoundError:
            job = None
        selector = ",".join(f"{k}={v}" for k, v in self._pod_labels(handle).items())
        pods = api.call(
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
            what=f"listing the pods of Job {job_name}",
        )
        return job, list(pods.get("items") or [])

    def _delete(self, handle: Handle) -> None:
        self._delete_job(str(handle.data["job"]))
        config_map = handle.data.get("config_map")
        if config_map:  # owned by the Job, unless a crash came between the two creates
            with contextlib.suppress(NotFoundError):
                api.call(
                    self.core.delete_namespaced_config_map,
                    config_map,
                    self.namespace,
                    what=f"deleting ConfigMap {config_map}",
                )

    def _delete_job(self, name: str) -> None:
        with contextlib.suppress(NotFoundError):  # already gone: cancel is silent
            api.call(
                self.batch.delete_namespaced_job,
                name,
                self.namespace,
                propagation_policy="Background",
                what=f"deleting Job {name}",
            )

    def _read_logs(self, handle: Handle, offset: int) -> LogChunk:
        job_name = str(handle.data["job"])
        found = self.feeds.lookup(job_name, self._pod_labels(handle)) or self._read(handle)
        return self.logs.read(job_name, self._own(handle, *found)[1], offset)

    def _live_handles(self) -> list[Handle]:
        data = api.call(
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=manifest.MANAGED_SELECTOR,
            what="listing Jobs",
        )
        handles = []
        for job in data.get("items") or []:
            meta, status = job["metadata"], job.get("status") or {}
            if meta.get("deletionTimestamp") or any(
                c.get("type") in FINISHED and c.get("status") == "True"
                for c in status.get("conditions") or []
            ):
                continue
            labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
            run_id = notes.get("launchyard.run-id") or labels.get("launchyard.run-id")
            attempt = labels.get("launchyard.attempt", "")
            if not run_id or not attempt.isdigit():
                continue
            handles.append(
                Handle(
                    backend=self.name,
                    run_id=run_id,
                    attempt=int(attempt),
                    data={
                        "namespace": self.namespace,
                        "job": meta["name"],
                        "uid": meta.get("uid"),
                        "config_map": manifest.config_map_name(meta["name"]),
                    },
                )
            )
        return handles

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _pod_labels(handle: Handle) -> dict[str, str]:
        return {
            "launchyard.run-id": manifest.label_value(handle.run_id),
            "launchyard.attempt": str(handle.attempt),
        }

    @staticmethod
    def _own(
        handle: Handle, job: dict[str, Any] | None, pods: list[dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Only the Job this handle made (same uid) and that Job's pods."""
        uid = handle.data.get("uid")
        if not uid:
            return job, pods
        if job is not None and job["metadata"].get("uid") != uid:
            job = None
        owned = [
            p
            for p in pods
            if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])
        ]
        return job, owned
