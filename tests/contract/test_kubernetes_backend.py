"""The Kubernetes backend through the real ``kubernetes`` client, over HTTP, against the
mock API server in ``tests/k8s_mock`` (no API server can run on these machines).

Pods are driven two ways: by hand through the mock's hooks (each state the
scheduler and kubelet can report), or by its tiny kubelet (``run_pods=True``),
which runs the container's command as a local process so exit codes, env and
logs are real. Waits poll every 0.02 s up to a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k8s_mock import UNSCHEDULABLE_GPU, MockKubernetes
from launchyard import templating
from launchyard.backends import get_backend_class
from launchyard.backends.base import Handle, LaunchSpec, LogChunk, Observation, Phase
from launchyard.backends.kubernetes import KubernetesBackend
from launchyard.backends.kubernetes.doctor import cluster_checks
from launchyard.backends.kubernetes.manifest import job_name
from launchyard.errors import BackendError, InvalidInputError

ISSUE_YAML = """\
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
"""
NFS_JSON = json.dumps(
    {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "image": "${image_uri}",
                            "resources": {
                                "limits": {"cpu": 4, "memory": "12Gi", "nvidia.com/gpu": "{{gpus}}"}
                            },
                            "volumeMounts": [{"name": "nfs-storage", "mountPath": "/root/.cache"}],
                        }
                    ],
                    "volumes": [
                        {"name": "nfs-storage", "persistentVolumeClaim": {"claimName": "nfs-pvc"}}
                    ],
                    "restartPolicy": "Never",
                }
            },
            "backoffLimit": 0,
        }
    }
)
SIMPLE = {"spec": {"template": {"spec": {"containers": [{"image": "${image_uri}"}]}}}}


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[MockKubernetes]:
    mock = MockKubernetes().start()
    yield mock
    mock.stop()


@pytest.fixture
def kubelet_cluster() -> Iterator[MockKubernetes]:
    mock = MockKubernetes(run_pods=True).start()
    yield mock
    mock.stop()


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator[Callable[..., KubernetesBackend]]:
    made: list[KubernetesBackend] = []

    def make(mock: MockKubernetes, **options: Any) -> KubernetesBackend:
        kubeconfig = mock.write_kubeconfig(tmp_path / f"kubeconfig-{len(made)}")
        backend = get_backend_class("kubernetes").create(
            state_dir=tmp_path / "state",
            lease_ttl_s=10,
            options={"kubeconfig": str(kubeconfig), **options},
        )
        assert isinstance(backend, KubernetesBackend)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        asyncio.run(backend.close())


def spec(config: dict[str, Any] | None = None, **fields: Any) -> LaunchSpec:
    rendered = templating.render(config or SIMPLE, {}, {"image_uri": "ghcr.io/acme/train:1"})
    values: dict[str, Any] = {
        "run_id": f"r{uuid.uuid4().hex[:9]}",
        "attempt": 1,
        "entity": "acme",
        "project": "vision",
        "queue": "gpu",
        "command": [],
        "config": rendered,
        "env": {"LAUNCHYARD_ENTITY": "acme", "LAUNCHYARD_PROJECT": "vision"},
        "run_config": {"run_id": "x", "config": {"lr": 0.1}},
        "image": "ghcr.io/acme/train:1",
    }
    values.update(fields)
    return LaunchSpec(**values)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def wait_for(
    backend: KubernetesBackend,
    handle: Handle,
    check: Callable[[Observation], bool],
    timeout: float = 10.0,
) -> Observation:
    async def loop() -> Observation:
        deadline = time.monotonic() + timeout
        while True:
            obs = await backend.poll(handle)
            if check(obs):
                return obs
            assert time.monotonic() < deadline, f"still {obs} after {timeout} s"
            await asyncio.sleep(0.02)

    return run(loop())


def wait_end(backend: KubernetesBackend, handle: Handle) -> Observation:
    return wait_for(backend, handle, lambda o: o.phase.is_terminal)


def read_all(backend: KubernetesBackend, handle: Handle, offset: int = 0) -> str:
    async def loop() -> str:
        parts, at = [], offset
        while True:
            chunk = await backend.read_logs(handle, at)
            if chunk.next_offset == at:
                return "".join(parts)
            parts.append(chunk.text)
            at = chunk.next_offset

    return run(loop())


def until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return value


# -- launching ------------------------------------------------------------------------------


def test_command_runs_to_success_with_its_logs(kubelet_cluster, make_backend) -> None:
    backend = make_backend(kubelet_cluster)
    handle = run(backend.launch(spec(command=["sh", "-c", "echo hello; echo world"])))
    obs = wait_end(backend, handle)
    assert (obs.phase, obs.exit_code) == (Phase.SUCCEEDED, 0)
    assert read_all(backend, handle) == "hello\nworld\n"


def test_exit_code_3_fails_with_that_code(kubelet_cluster, make_backend) -> None:
    backend = make_backend(kubelet_cluster)
    handle = run(backend.launch(spec(command=["sh", "-c", "echo oops >&2; exit 3"])))
    obs = wait_end(backend, handle)
    assert (obs.phase, obs.exit_code, obs.reason) == (Phase.FAILED, 3, "exit code 3")
    assert read_all(backend, handle) == "oops\n"


def test_the_pod_sees_the_run_env_and_config_file(kubelet_cluster, make_backend) -> None:
    backend = make_backend(kubelet_cluster)
    script = (
        'echo "$LAUNCHYARD_RUN_ID $LAUNCHYARD_PROJECT $QUEUE_ENV"; cat "$LAUNCHYARD_CONFIG_FILE"'
    )
    s = spec({**SIMPLE, "env": {"QUEUE_ENV": "from-queue"}}, command=["sh", "-c", script])
    handle = run(backend.launch(s))
    assert wait_end(backend, handle).phase is Phase.SUCCEEDED
    first, rest = read_all(backend, handle).split("\n", 1)
    assert first == f"{s.run_id} vision from-queue"
    assert json.loads(rest) == s.run_config


def test_both_issue_configs_work_verbatim(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    for text in (ISSUE_YAML, NFS_JSON):
        tree = templating.parse_config(text)
        KubernetesBackend.check_config(tree)  # at queue creation, placeholders unrendered
        rendered = templating.render(tree, {"gpus": 2}, {"image_uri": "ghcr.io/acme/train:1"})
        KubernetesBackend.check_config(rendered)  # at submission
        assert KubernetesBackend.gpu_demand(rendered) == 2
        handle = run(backend.launch(spec(rendered)))
        job = cluster.store.get("jobs", "default", handle.data["job"])
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"] == {
            "cpu": "4",
            "memory": "12Gi",
            "nvidia.com/gpu": "2",
        }
        assert container["image"] == "ghcr.io/acme/train:1"
        assert (pod["restartPolicy"], job["spec"]["backoffLimit"]) == ("Never", 0)
        if text is NFS_JSON:
            assert {"name": "nfs-storage", "mountPath": "/root/.cache"} in container["volumeMounts"]
            assert {"name": "nfs-storage", "persistentVolumeClaim": {"claimName": "nfs-pvc"}} in (
                pod["volumes"]
            )


def test_job_names_labels_env_and_config_map(cluster, make_backend) -> None:
    backend = make_backend(cluster, ttl_seconds_after_finished=120)
    s = spec(
        run_id="k3x9q2m7p1",
        attempt=2,
        command=["python", "train.py"],
        env={"WANDB_MODE": "offline"},
    )
    handle = run(backend.launch(s))
    assert handle.data["job"] == "k3x9q2m7p1-2" == job_name("k3x9q2m7p1", 2)
    job = cluster.store.get("jobs", "default", "k3x9q2m7p1-2")
    labels = job["metadata"]["labels"]
    assert {
        k: labels[k]
        for k in (
            "launchyard.run-id",
            "launchyard.attempt",
            "launchyard.entity",
            "launchyard.project",
            "launchyard.queue",
        )
    } == {
        "launchyard.run-id": "k3x9q2m7p1",
        "launchyard.attempt": "2",
        "launchyard.entity": "acme",
        "launchyard.project": "vision",
        "launchyard.queue": "gpu",
    }
    assert job["spec"]["ttlSecondsAfterFinished"] == 120
    pod_labels = cluster.pod("k3x9q2m7p1-2")["metadata"]["labels"]
    assert pod_labels["launchyard.run-id"] == "k3x9q2m7p1"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "main" and container["args"] == ["python", "train.py"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LAUNCHYARD_RUN_ID"] == "k3x9q2m7p1" and env["WANDB_MODE"] == "offline"
    assert env["LAUNCHYARD_CONFIG_FILE"] == "/etc/launchyard/config.json"
    config_map = cluster.store.get("configmaps", "default", "k3x9q2m7p1-2-config")
    assert json.loads(config_map["data"]["config.json"]) == s.run_config
    [owner] = config_map["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Job",
        "k3x9q2m7p1-2",
        job["metadata"]["uid"],
    )
    # the config map is mounted where LAUNCHYARD_CONFIG_FILE points
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/launchyard")
    assert volumes[mount["name"]]["configMap"]["name"] == "k3x9q2m7p1-2-config"


def test_second_launch_adopts_the_job_after_409(cluster, make_backend) -> None:
    s = spec()
    first = run(make_backend(cluster).launch(s))
    second = run(make_backend(cluster).launch(s))  # e.g. an agent restarted mid-launch
    assert first == second
    assert len(cluster.objects("jobs")) == 1 and len(cluster.objects("pods")) == 1
    assert len(cluster.calls("POST", "/jobs")) == 2  # the second got 409 AlreadyExists


def test_a_job_name_held_by_another_run_is_refused(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    run(backend.launch(spec(run_id="a1b2c3d4e5")))
    job = cluster.store.get("jobs", "default", "a1b2c3d4e5-1")
    cluster.store.update(
        "jobs",
        "default",
        "a1b2c3d4e5-1",
        lambda o: o["metadata"]["labels"].update({"launchyard.run-id": "other"}),
    )
    assert job["metadata"]["name"] == "a1b2c3d4e5-1"
    with pytest.raises(BackendError, match="belongs to run 'other'"):
        run(backend.launch(spec(run_id="a1b2c3d4e5")))


def test_queue_cache_option_mounts_the_claim(cluster, make_backend) -> None:
    backend = make_backend(cluster, cache_pvc="agent-pvc", cache_path="/cache")
    config = {**SIMPLE, "cache": {"pvc": "nfs-pvc", "path": "/root/.cache"}}
    handle = run(backend.launch(spec(config)))
    pod = cluster.store.get("jobs", "default", handle.data["job"])["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"] == {"claimName": "nfs-pvc"}  # the queue's wins
    container = pod["containers"][0]
    assert {"name": volume["name"], "mountPath": "/root/.cache"} in container["volumeMounts"]
    assert {"name": "HF_HOME", "value": "/root/.cache/huggingface"} in container["env"]
    other = run(backend.launch(spec()))  # no queue option: the agent's claim
    pod = cluster.store.get("jobs", "default", other.data["job"])["spec"]["template"]["spec"]
    assert any(v.get("persistentVolumeClaim") == {"claimName": "agent-pvc"} for v in pod["volumes"])


def test_kueue_queue_label_creates_the_job_suspended(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    config = {**SIMPLE, "metadata": {"labels": {"kueue.x-k8s.io/queue-name": "team-a"}}}
    handle = run(backend.launch(spec(config)))
    job = cluster.store.get("jobs", "default", handle.data["job"])
    assert job["spec"]["suspend"] is True and not cluster.objects("pods")
    obs = run(backend.poll(handle))
    assert obs.phase is Phase.PENDING and "suspended" in (obs.reason or "")


def test_a_config_error_is_refused_before_anything_is_sent(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    bad = {
        "spec": {
            "template": {
                "spec": {"containers": [{"image": "x", "resources": {"volumeMounts": []}}]}
            }
        }
    }
    with pytest.raises(InvalidInputError, match="volumeMounts belongs to the container"):
        run(backend.launch(spec(bad)))
    assert not cluster.calls("POST")


# -- states ---------------------------------------------------------------------------------


def test_pending_on_insufficient_gpus_says_why(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.unschedulable(handle.data["job"])
    obs = wait_for(backend, handle, lambda o: "Insufficient" in (o.reason or ""))
    assert obs.phase is Phase.PENDING
    assert obs.reason == f"waiting for a node: {UNSCHEDULABLE_GPU}"
    cluster.running(handle.data["job"])
    assert wait_for(backend, handle, lambda o: o.phase is not Phase.PENDING).phase is Phase.RUNNING


def test_image_pull_failure_fails_the_run_and_release_deletes_the_job(
    cluster, make_backend
) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.waiting(
        handle.data["job"], "ImagePullBackOff", 'Back-off pulling image "ghcr.io/acme/train:1"'
    )
    obs = wait_end(backend, handle)
    assert obs.phase is Phase.FAILED
    assert obs.reason == (
        'image pull failed: ImagePullBackOff: Back-off pulling image "ghcr.io/acme/train:1"'
    )
    run(backend.release(handle))
    assert not cluster.objects("jobs") and not cluster.objects("pods")


def test_err_image_pull_fails_too(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.waiting(handle.data["job"], "ErrImagePull", "manifest unknown")
    assert wait_end(backend, handle).reason == "image pull failed: ErrImagePull: manifest unknown"


def test_oom_killed(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.running(handle.data["job"])
    cluster.terminate(handle.data["job"], 137, "OOMKilled")
    obs = wait_end(backend, handle)
    assert (obs.phase, obs.exit_code) == (Phase.FAILED, 137)
    assert obs.reason is not None and obs.reason.startswith("OOMKilled (exit code 137)")


def test_deadline_exceeded(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    config = {"spec": {**SIMPLE["spec"], "activeDeadlineSeconds": 60}}
    handle = run(backend.launch(spec(config)))
    cluster.running(handle.data["job"])
    cluster.deadline_exceeded(handle.data["job"])
    obs = wait_end(backend, handle)
    assert obs.phase is Phase.FAILED
    assert obs.reason == "DeadlineExceeded: the Job ran longer than activeDeadlineSeconds (60 s)"


def test_preemption_is_reported_as_preempted(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.running(handle.data["job"])
    cluster.disrupt(handle.data["job"], "PreemptionByScheduler", "preempted by prod/serve-0")
    obs = wait_end(backend, handle)
    assert obs.phase is Phase.PREEMPTED
    assert obs.reason == "preempted: PreemptionByScheduler: preempted by prod/serve-0"
    run(backend.release(handle))  # launchyard requeues: Kubernetes must not retry it too
    for job in cluster.objects("jobs"):  # gone, or failed for good (then kept for its TTL)
        assert any(c["type"] == "Failed" for c in job["status"]["conditions"])


def test_a_job_deleted_behind_our_back_is_lost(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.store.delete("jobs", "default", handle.data["job"], "Background")
    obs = wait_end(backend, handle)
    assert obs.phase is Phase.LOST


def test_cancel_deletes_the_job_with_background_propagation(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.running(handle.data["job"])
    run(backend.cancel(handle, grace_s=5))
    [(path, query, _)] = cluster.calls("DELETE", "/jobs/")
    assert path.endswith(f"/jobs/{handle.data['job']}")
    assert query["propagationPolicy"] == "Background"
    assert not cluster.objects("jobs") and not cluster.objects("pods")
    assert not cluster.objects("configmaps")
    assert wait_end(backend, handle).phase is Phase.CANCELLED
    run(backend.cancel(handle))  # already gone: silent


# -- watches --------------------------------------------------------------------------------


def _watching(backend: KubernetesBackend) -> None:
    until(lambda: backend.feeds.jobs.connected and backend.feeds.pods.connected)


def test_poll_reads_the_watch_cache_not_the_api(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    _watching(backend)
    cluster.running(handle.data["job"])
    wait_for(backend, handle, lambda o: o.phase is Phase.RUNNING)
    gets = len(cluster.calls("GET"))
    for _ in range(20):
        run(backend.poll(handle))
    assert len(cluster.calls("GET")) == gets


def test_watch_resumes_from_its_version_after_a_dropped_connection(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    _watching(backend)
    relists, started = backend.feeds.pods.relists, cluster.watches_started
    cluster.drop_watches()
    cluster.running(handle.data["job"])  # happens while the watch is down
    cluster.terminate(handle.data["job"], 0)
    assert wait_end(backend, handle).phase is Phase.SUCCEEDED
    until(lambda: cluster.watches_started >= started + 2)  # both feeds reconnected
    resumed = [q for p, q, _ in cluster.calls("GET") if q.get("watch") == "true"][-2:]
    assert all(q.get("resourceVersion") not in (None, "0") for q in resumed)
    assert backend.feeds.pods.relists == relists  # resumed, not listed again


def test_watch_lists_again_after_410_gone(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    _watching(backend)
    relists = backend.feeds.pods.relists
    cluster.running(handle.data["job"])
    cluster.compact()  # the versions the feeds hold are gone now
    cluster.drop_watches()
    until(lambda: backend.feeds.pods.relists > relists)
    cluster.terminate(handle.data["job"], 4)
    obs = wait_end(backend, handle)
    assert (obs.phase, obs.exit_code) == (Phase.FAILED, 4)


# -- logs and adoption ----------------------------------------------------------------------


def test_logs_continue_from_the_byte_offset(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    job = handle.data["job"]
    assert run(backend.read_logs(handle, 0)).text == ""  # not started: no log yet
    cluster.running(job)
    cluster.log(job, "ép")
    log = cluster.store.logs[("default", cluster.pod(job)["metadata"]["name"])]
    log.extend("ß".encode()[:1])  # half a character so far: held back, not mangled
    wait_for(backend, handle, lambda o: o.phase is Phase.RUNNING)
    assert run(backend.read_logs(handle, 0)) == LogChunk(text="ép", next_offset=3)
    log.extend("ß".encode()[1:] + b"och 1\n")
    cluster.terminate(job, 0)
    wait_end(backend, handle)
    assert read_all(backend, handle, 3) == "ßoch 1\n"
    assert read_all(backend, handle) == "épßoch 1\n"


def test_a_restarted_agent_adopts_running_jobs_by_label(cluster, make_backend) -> None:
    first = make_backend(cluster)
    done, live = run(first.launch(spec())), run(first.launch(spec()))
    cluster.running(done.data["job"])
    cluster.terminate(done.data["job"], 0)
    cluster.running(live.data["job"])
    restarted = make_backend(cluster)
    handles = run(restarted.live_handles())
    assert handles == [live]
    assert run(restarted.poll(live)).phase is Phase.RUNNING
    assert run(restarted.poll(done)).phase is Phase.SUCCEEDED


def test_api_errors_become_launchyard_errors(tmp_path, cluster, make_backend) -> None:
    cluster.token = "rotated"  # the kubeconfig's token is no longer accepted
    backend = make_backend(cluster)
    cluster.token = "mock-token-2"
    with pytest.raises(BackendError, match="401"):
        run(backend.launch(spec()))
    port = cluster.http.server_address[1]
    cluster.stop()
    down = make_backend(cluster)
    with pytest.raises(BackendError, match="cannot reach the Kubernetes API"):
        run(down.launch(spec()))
    assert str(port) in down.api_client.configuration.host


def test_unknown_agent_options_are_refused(cluster, make_backend) -> None:
    with pytest.raises(InvalidInputError, match="namespce"):
        make_backend(cluster, namespce="ml")


def test_doctor_checks_the_cluster(cluster, tmp_path) -> None:
    options = {"kubeconfig": str(cluster.write_kubeconfig(tmp_path / "kubeconfig"))}
    checks = {c.name: c for c in cluster_checks(options)}
    assert all(c.ok for c in checks.values()), checks
    assert checks["context"].detail.startswith(f"context mock: {cluster.url}, namespace default")
    assert checks["GPU nodes"].detail == (
        "12 GPU(s) on gpu-node-0 (4), gpu-node-1 (4), gpu-node-2 (4)"
    )
    assert "v1.31.0" in checks["API reachable"].detail
    cluster.nodes, cluster.daemon_sets = [{"metadata": {"name": "cpu"}, "status": {}}], []
    checks = {c.name: c for c in cluster_checks(options)}
    assert not checks["GPU nodes"].ok and "install the NVIDIA device plugin" in (
        checks["GPU nodes"].detail
    )
    assert not checks["NVIDIA device plugin"].ok
    cluster.stop()
    [context, reach] = cluster_checks(options)
    assert context.ok and not reach.ok and "cannot reach" in reach.detail
    [context] = cluster_checks({"kubeconfig": str(tmp_path / "missing")})
    assert not context.ok and "cannot load the Kubernetes configuration" in context.detail


def test_poll_keeps_the_last_state_while_the_api_is_away(cluster, make_backend) -> None:
    backend = make_backend(cluster)
    handle = run(backend.launch(spec()))
    cluster.running(handle.data["job"])
    wait_for(backend, handle, lambda o: o.phase is Phase.RUNNING)
    cluster.stop()
    until(lambda: not backend.feeds.pods.connected)
    assert run(backend.poll(handle)).phase is Phase.RUNNING  # not lost: just unknown for now
    never_seen = Handle("kubernetes", "zzz", 1, {"job": "zzz-1", "uid": "u"})
    obs = run(backend.poll(never_seen))
    assert obs.phase is Phase.PENDING and "cannot reach the Kubernetes API" in (obs.reason or "")
