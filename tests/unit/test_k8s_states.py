"""Job and pod JSON (as the API serves it) → phase and reason: every case the docs promise."""

from __future__ import annotations

from typing import Any

import pytest

from launchyard.backends.base import Observation, Phase
from launchyard.backends.kubernetes.states import CANCELLED, GONE, observe

GPU_MESSAGE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def job(*conditions: tuple[str, str, str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "r1-1"},
        "spec": {"backoffLimit": 0, **spec},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions
            ]
        },
    }


def pod(
    phase: str = "Pending",
    *,
    created: str = "2026-01-01T00:00:00Z",
    conditions: list[dict[str, Any]] | None = None,
    state: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"phase": phase, "conditions": conditions or [], **status}
    if state is not None:
        body["containerStatuses"] = [{"name": "main", "image": "img:1", "state": state}]
    return {
        "metadata": {"name": f"r1-1-{created[-3:-1]}", "creationTimestamp": created},
        "status": body,
    }


def terminated(code: int, reason: str = "Error") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason}}


FAILED = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
CASES: list[tuple[str, dict[str, Any] | None, list[dict[str, Any]], Observation]] = [
    (
        "no pod yet",
        job(),
        [],
        Observation(Phase.PENDING, reason="waiting for the Job's pod to be created"),
    ),
    (
        "unschedulable: the scheduler's words",
        job(),
        [
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": GPU_MESSAGE,
                    }
                ]
            )
        ],
        Observation(Phase.PENDING, reason=f"waiting for a node: {GPU_MESSAGE}"),
    ),
    (
        "container creating",
        job(),
        [pod(state={"waiting": {"reason": "ContainerCreating"}})],
        Observation(Phase.PENDING, reason="ContainerCreating"),
    ),
    (
        "config error stays pending with its reason",
        job(),
        [
            pod(
                state={
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "hf" not found',
                    }
                }
            )
        ],
        Observation(Phase.PENDING, reason='CreateContainerConfigError: secret "hf" not found'),
    ),
    (
        "ImagePullBackOff fails",
        job(),
        [
            pod(
                state={
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "img:1"',
                    }
                }
            )
        ],
        Observation(
            Phase.FAILED,
            reason='image pull failed: ImagePullBackOff: Back-off pulling image "img:1"',
        ),
    ),
    (
        "ErrImagePull without a message names the image",
        job(),
        [pod(state={"waiting": {"reason": "ErrImagePull"}})],
        Observation(Phase.FAILED, reason="image pull failed: ErrImagePull: could not pull img:1"),
    ),
    ("running", job(), [pod("Running", state={"running": {}})], Observation(Phase.RUNNING)),
    (
        "complete",
        job(("Complete", "", "")),
        [pod("Succeeded", state=terminated(0, "Completed"))],
        Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0"),
    ),
    (
        "pod done, the Job's verdict not in yet",
        job(),
        [pod("Failed", state=terminated(3))],
        Observation(Phase.RUNNING, reason="pod failed"),
    ),
    (
        "exit code 3",
        job(FAILED),
        [pod("Failed", state=terminated(3))],
        Observation(Phase.FAILED, exit_code=3, reason="exit code 3"),
    ),
    (
        "OOMKilled",
        job(FAILED),
        [pod("Failed", state=terminated(137, "OOMKilled"))],
        Observation(
            Phase.FAILED,
            exit_code=137,
            reason="OOMKilled (exit code 137): the container "
            "ran out of memory; raise resources.limits.memory",
        ),
    ),
    (
        "FailureTarget counts as the verdict",
        job(("FailureTarget", "BackoffLimitExceeded", "x")),
        [pod("Failed", state=terminated(2))],
        Observation(Phase.FAILED, exit_code=2, reason="exit code 2"),
    ),
    (
        "failed, no pod left",
        job(FAILED),
        [],
        Observation(
            Phase.FAILED, reason="BackoffLimitExceeded: Job has reached the specified backoff limit"
        ),
    ),
    (
        "DeadlineExceeded",
        job(
            ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"),
            activeDeadlineSeconds=3600,
        ),
        [pod("Failed", state=terminated(143))],
        Observation(
            Phase.FAILED,
            reason="DeadlineExceeded: the Job ran longer than activeDeadlineSeconds (3600 s)",
        ),
    ),
    (
        "preempted, even once the Job failed",
        job(FAILED),
        [
            pod(
                "Failed",
                state=terminated(137),
                conditions=[
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                        "message": "preempted by prod/serve-0",
                    }
                ],
            )
        ],
        Observation(
            Phase.PREEMPTED,
            exit_code=137,
            reason="preempted: PreemptionByScheduler: preempted by prod/serve-0",
        ),
    ),
    (
        "evicted",
        job(),
        [pod("Failed", reason="Evicted", message="node low on memory")],
        Observation(Phase.PREEMPTED, reason="preempted: Evicted: node low on memory"),
    ),
    (
        "suspended for Kueue",
        job(suspend=True),
        [],
        Observation(Phase.PENDING, reason="the Job is suspended (waiting for admission)"),
    ),
    (
        "the newest pod speaks (backoffLimit > 0)",
        job(),
        [
            pod("Failed", state=terminated(1)),
            pod("Running", created="2026-01-01T00:00:09Z", state={"running": {}}),
        ],
        Observation(Phase.RUNNING),
    ),
    ("deleted", None, [], Observation(Phase.LOST, reason=GONE)),
    (
        "deleted, pods still terminating",
        None,
        [pod("Running", state={"running": {}})],
        Observation(Phase.LOST, reason=GONE),
    ),
]


@pytest.mark.parametrize(
    ("job_obj", "pods", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_observe(
    job_obj: dict[str, Any] | None, pods: list[dict[str, Any]], expected: Observation
) -> None:
    assert observe(job_obj, pods) == expected


def test_a_cancelled_run_reads_cancelled_whatever_is_left() -> None:
    assert observe(None, [pod("Running")], cancelled=True) == Observation(
        Phase.CANCELLED, reason=CANCELLED
    )
