"""A Job and its pods (as the API serves them) → one :class:`Observation`.

Pure functions over the JSON objects, so every case is unit-tested without a
cluster. The order of the checks is the design:

1. Preemption first: a pod with the ``DisruptionTarget`` condition (scheduler
   preemption, eviction, node drain, taint) was taken away, whatever the Job
   did about it afterwards → ``PREEMPTED``, and the run is requeued.
2. The Job's own verdict: ``Complete`` → succeeded; ``Failed``/``FailureTarget``
   → failed, with the pod's exit code or ``OOMKilled`` when a pod says why,
   else the Job's reason (``DeadlineExceeded``, ``BackoffLimitExceeded``).
3. Otherwise the newest pod tells why the run waits or that it runs. Image
   pull errors end the run (``FAILED``) because Kubernetes would retry them
   forever; everything else pending stays ``PENDING`` with its reason
   ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.").
"""

from __future__ import annotations

from typing import Any

from launchyard.backends.base import Observation, Phase

Obj = dict[str, Any]

IMAGE_PULL_ERRORS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
EVICTED = "Evicted"
GONE = "the Kubernetes Job was deleted"
CANCELLED = "cancelled: the Job was deleted"
OOM_HINT = "the container ran out of memory; raise resources.limits.memory"


def observe(job: Obj | None, pods: list[Obj], *, cancelled: bool = False) -> Observation:
    """The run's phase from its Job (None when gone) and the Job's pods."""
    if cancelled:
        return Observation(Phase.CANCELLED, reason=CANCELLED)
    if job is None and not pods:
        return Observation(Phase.LOST, reason=GONE)
    newest = max(pods, key=age_key, default=None)
    for pod in sorted(pods, key=age_key, reverse=True):
        preempted = _preemption(pod)
        if preempted is not None:
            return Observation(Phase.PREEMPTED, exit_code=_exit_code(pod), reason=preempted)
    if job is None:  # deleted, its pods still terminating
        return Observation(Phase.LOST, reason=GONE)
    verdict = _job_verdict(job, pods)
    if verdict is not None:
        return verdict
    if (job.get("spec") or {}).get("suspend"):
        return Observation(Phase.PENDING, reason="the Job is suspended (waiting for admission)")
    if newest is None:
        return Observation(Phase.PENDING, reason="waiting for the Job's pod to be created")
    return _pod_progress(newest)


def _job_verdict(job: Obj, pods: list[Obj]) -> Observation | None:
    conditions = {c.get("type"): c for c in _conditions(job) if c.get("status") == "True"}
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0")
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is None:
        return None
    job_reason = failed.get("reason") or "Failed"
    if job_reason != "DeadlineExceeded":
        for pod in sorted(pods, key=age_key, reverse=True):
            ended = _terminated(pod)
            if ended is not None and ended.get("exitCode", 0) != 0:
                return _from_terminated(ended)
    deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
    detail = failed.get("message") or ""
    if job_reason == "DeadlineExceeded" and deadline is not None:
        detail = f"the Job ran longer than activeDeadlineSeconds ({deadline} s)"
    return Observation(Phase.FAILED, reason=f"{job_reason}: {detail}".rstrip(": "))


def _pod_progress(pod: Obj) -> Observation:
    status = pod.get("status") or {}
    for cstatus in status.get("containerStatuses") or []:
        waiting = (cstatus.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_PULL_ERRORS:
            image = cstatus.get("image") or ""
            message = waiting.get("message") or f"could not pull {image}"
            return Observation(Phase.FAILED, reason=f"image pull failed: {reason}: {message}")
        if reason and reason not in ("ContainerCreating", "PodInitializing"):
            return Observation(Phase.PENDING, reason=_join(reason, waiting.get("message")))
    phase = status.get("phase")
    if phase == "Running":
        return Observation(Phase.RUNNING)
    if phase in ("Succeeded", "Failed"):  # the Job's verdict follows in its next update
        return Observation(Phase.RUNNING, reason=f"pod {phase.lower()}")
    for cond in _conditions(pod):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            why = cond.get("message") or cond.get("reason") or "not scheduled"
            return Observation(Phase.PENDING, reason=f"waiting for a node: {why}")
    return Observation(Phase.PENDING, reason="ContainerCreating")


def _preemption(pod: Obj) -> str | None:
    status = pod.get("status") or {}
    for cond in _conditions(pod):
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return "preempted: " + _join(
                cond.get("reason") or "DisruptionTarget", cond.get("message")
            )
    if status.get("phase") == "Failed" and status.get("reason") == EVICTED:
        return "preempted: " + _join(EVICTED, status.get("message"))
    return None


def _terminated(pod: Obj) -> Obj | None:
    for cstatus in (pod.get("status") or {}).get("containerStatuses") or []:
        ended = (cstatus.get("state") or {}).get("terminated")
        if ended is not None and ended.get("exitCode", 0) != 0:
            return dict(ended)
    return None


def _from_terminated(ended: Obj) -> Observation:
    code = ended.get("exitCode")
    if ended.get("reason") == "OOMKilled":
        return Observation(
            Phase.FAILED, exit_code=code, reason=f"OOMKilled (exit code {code}): {OOM_HINT}"
        )
    return Observation(Phase.FAILED, exit_code=code, reason=f"exit code {code}")


def _exit_code(pod: Obj) -> int | None:
    ended = _terminated(pod)
    return None if ended is None else ended.get("exitCode")


def _conditions(obj: Obj) -> list[Obj]:
    return list((obj.get("status") or {}).get("conditions") or [])


def age_key(pod: Obj) -> tuple[str, bool]:
    """Newest first by creation time (seconds); within one second, a live pod is newer."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return (str(meta.get("creationTimestamp") or ""), status.get("phase") in ("Pending", "Running"))


def _join(reason: str, message: Any) -> str:
    return f"{reason}: {message}" if message else reason
