"""A ``resource: kubernetes`` queue end to end: real server and agent processes, the agent
talking through the official client to the mock API server (``tests/k8s_mock``, run here in
a thread) via a kubeconfig file. The mock's kubelet runs each pod's command locally, so the
run's logs, env and exit code are real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import LiveServer, wait_until, write

from k8s_mock import MockKubernetes

K8S_QUEUE = """\
name: k8s
resource: kubernetes
config:
  spec:
    template:
      spec:
        containers:
          - image: ${image_uri}
            resources:
              limits:
                cpu: 4
                memory: 12Gi
                nvidia.com/gpu: '{{gpus}}'
        restartPolicy: Never
    backoffLimit: 0
variables:
  gpus:
    description: GPUs per run
    schema: {type: integer, default: 1, minimum: 0, maximum: 4}
"""


@pytest.fixture
def cluster() -> Iterator[MockKubernetes]:
    mock = MockKubernetes(run_pods=True).start()
    yield mock
    mock.stop()


def start_k8s_agent(server: LiveServer, cluster: MockKubernetes, tmp: Path) -> None:
    kubeconfig = cluster.write_kubeconfig(tmp / "kubeconfig")
    agent = write(
        tmp / "agent.yaml",
        json.dumps(
            {
                "queues": ["k8s"],
                "entity": "default",
                "max_jobs": 2,
                "gpus": "none",
                "backends": {
                    "kubernetes": {"kubeconfig": str(kubeconfig), "ttl_seconds_after_finished": 300}
                },
            }
        ),
    )
    server.cli("queue", "create", "-f", str(write(tmp / "q.yaml", K8S_QUEUE)))
    server.start_agent("-c", str(agent), name="k8s-agent")
    server.wait_agent_ready("k8s-agent")


def test_kubernetes_run_followed_to_finished(
    cluster: MockKubernetes, live_server: LiveServer, tmp_path: Path
) -> None:
    start_k8s_agent(live_server, cluster, tmp_path)
    too_many = live_server.cli(
        "launch", "-q", "k8s", "-d", "ghcr.io/acme/train:1", "--set", "gpus=9", check=False
    )
    assert too_many.returncode == 1 and "gpus" in too_many.stderr + too_many.stdout
    result = live_server.cli(
        "launch",
        "-q",
        "k8s",
        "-d",
        "ghcr.io/acme/train:1",
        "--set",
        "gpus=2",
        "--follow",
        "--",
        "sh",
        "-c",
        'sleep 0.5; echo "hello from $LAUNCHYARD_RUN_ID"; cat "$LAUNCHYARD_CONFIG_FILE"; echo',
        timeout=90,
    )
    run_id = result.stdout.strip().splitlines()[-1]
    assert f"hello from {run_id}" in result.stdout
    shown = json.loads(live_server.cli("runs", "show", run_id, "--json").stdout)
    assert shown["state"] == "finished" and shown["exit_code"] == 0 and shown["gpus"] == 2
    assert [t["state"] for t in shown["transitions"]][-2:] == ["running", "finished"]
    [job] = cluster.objects("jobs")  # the out-of-range run never reached the cluster
    assert job["metadata"]["labels"]["launchyard.run-id"] == run_id
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"


def test_a_preempted_pod_requeues_the_run_as_a_new_attempt(
    cluster: MockKubernetes, live_server: LiveServer, tmp_path: Path
) -> None:
    start_k8s_agent(live_server, cluster, tmp_path)
    script = (
        'if [ "$LAUNCHYARD_ATTEMPT" = 1 ]; then sleep 60; fi; echo "attempt $LAUNCHYARD_ATTEMPT"'
    )
    out = live_server.cli(
        "launch", "-q", "k8s", "-d", "ghcr.io/acme/train:1", "--", "sh", "-c", script
    ).stdout
    run_id = out.strip().splitlines()[-1]
    client = live_server.client()
    wait_until(lambda: client.get_run(run_id)["state"] == "running", 30)
    cluster.disrupt(f"{run_id}-1", "PreemptionByScheduler", "preempted by prod/serve-0")
    wait_until(lambda: client.get_run(run_id)["state"] == "finished", 60)
    shown = json.loads(live_server.cli("runs", "show", run_id, "--json").stdout)
    states = [t["state"] for t in shown["transitions"]]
    assert states[states.index("preempted") :][:2] == ["preempted", "queued"], states
    # Exactly one more attempt: a third would mean the agent lost attempt 2 (its lease expired).
    assert shown["attempt"] == 2 and states[-1] == "finished", [
        (t["attempt"], t["state"], t["reason"]) for t in shown["transitions"]
    ]
    preempted = next(t for t in shown["transitions"] if t["state"] == "preempted")
    assert "PreemptionByScheduler" in preempted["reason"]
    assert "attempt 2" in live_server.cli("logs", run_id).stdout
