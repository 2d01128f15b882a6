"""``MockKubernetes``: the mock API server in a thread, plus hooks that play the
scheduler and the kubelet.

Two ways to drive pods:

- by hand (default): a Job's pod stays ``Pending`` until a test calls a hook
  (``unschedulable``, ``waiting``, ``running``, ``terminate``, ``disrupt``, ...);
- ``run_pods=True``: a tiny kubelet runs each pod's first container as a local
  process (``command`` + ``args``; the image is ignored), streams its output into
  the pod log and reports its exit code. ConfigMap volumes are written to a temp
  folder and env values that point into a mount are rewritten to that folder, so
  ``cat $LAUNCHYARD_CONFIG_FILE`` works.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from k8s_mock.http import MockHTTPServer
from k8s_mock.store import ApiError, Obj, Store, now

UNSCHEDULABLE_GPU = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


class MockKubernetes:
    def __init__(self, *, run_pods: bool = False, token: str | None = "mock-token") -> None:
        self.store = Store()
        self.run_pods = run_pods
        self.token = token
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.stopping = False
        self.drop_generation = 0
        self.connections: set[socket.socket] = set()
        self.watches_started = 0
        self.nodes: list[Obj] = [
            {
                "metadata": {"name": f"gpu-node-{i}", "labels": {}},
                "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"}},
            }
            for i in range(3)
        ]
        self.daemon_sets: list[Obj] = [
            {
                "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
                "status": {"desiredNumberScheduled": 3, "numberReady": 3},
            }
        ]
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="k8s-mock-")
        self.store.on_pod_created.append(self._pod_created)
        self.store.on_pod_deleted.append(self._pod_deleted)
        self.http = MockHTTPServer(self)
        self._thread = threading.Thread(
            target=self.http.serve_forever, args=(0.05,), daemon=True, name="k8s-mock"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def start(self) -> MockKubernetes:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        with self.store.cond:
            self.store.cond.notify_all()
        for proc in list(self._procs.values()):
            _kill(proc)
        self.http.shutdown()
        self.http.server_close()
        for conn in list(self.connections):  # kept-alive connections would go on answering
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._tmp.cleanup()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context talks to this server with its token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "mock",
            "clusters": [{"name": "mock", "cluster": {"server": self.url}}],
            "users": [{"name": "mock", "user": {"token": self.token or ""}}],
            "contexts": [
                {
                    "name": "mock",
                    "context": {"cluster": "mock", "user": "mock", "namespace": namespace},
                }
            ],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- looking -----------------------------------------------------------------------------

    def objects(self, kind: str, ns: str = "default", selector: str | None = None) -> list[Obj]:
        return self.store.list(kind, ns, selector)[0]

    def pod(self, job: str, ns: str = "default") -> Obj:
        """The newest pod of a Job."""
        pods = self.objects("pods", ns, f"job-name={job}")
        if not pods:
            raise AssertionError(f"job {job} has no pod")
        return max(pods, key=lambda p: int(p["metadata"]["resourceVersion"]))

    def calls(self, method: str, fragment: str = "") -> list[tuple[str, dict[str, str], Any]]:
        return [(p, q, b) for m, p, q, b in self.requests if m == method and fragment in p]

    # -- test hooks: cluster events ------------------------------------------------------------

    def compact(self) -> None:
        """Drop the event history: watches resuming from before now get 410 Gone."""
        self.store.compact()

    def drop_watches(self) -> None:
        """Cut every open watch connection without a proper end (a dropped network)."""
        self.drop_generation += 1

    def _set_pod(self, job: str, ns: str, change: Any) -> Obj:
        return self.store.update("pods", ns, self.pod(job, ns)["metadata"]["name"], change)

    def unschedulable(self, job: str, message: str = UNSCHEDULABLE_GPU, ns: str = "default") -> Obj:
        def change(pod: Obj) -> None:
            pod["status"] = {
                "phase": "Pending",
                "conditions": [_cond("PodScheduled", "False", "Unschedulable", message)],
            }

        return self._set_pod(job, ns, change)

    def waiting(self, job: str, reason: str, message: str = "", ns: str = "default") -> Obj:
        def change(pod: Obj) -> None:
            pod["status"] = {
                "phase": "Pending",
                "conditions": [_cond("PodScheduled", "True")],
                "containerStatuses": [
                    _cstatus(pod, {"waiting": {"reason": reason, "message": message}})
                ],
            }

        return self._set_pod(job, ns, change)

    def running(self, job: str, ns: str = "default") -> Obj:
        def change(pod: Obj) -> None:
            pod["status"] = {
                "phase": "Running",
                "startTime": now(),
                "conditions": [_cond("PodScheduled", "True"), _cond("Ready", "True")],
                "containerStatuses": [_cstatus(pod, {"running": {"startedAt": now()}}, ready=True)],
            }

        return self._set_pod(job, ns, change)

    def terminate(
        self,
        job: str,
        exit_code: int,
        reason: str | None = None,
        message: str | None = None,
        ns: str = "default",
    ) -> Obj:
        """The container ended: Succeeded for 0, Failed otherwise (reason e.g. OOMKilled)."""

        def change(pod: Obj) -> None:
            state = {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "startedAt": now(),
                "finishedAt": now(),
            }
            if message:
                state["message"] = message
            conditions = [c for c in pod["status"].get("conditions", []) if c["type"] != "Ready"]
            pod["status"] = {
                **pod["status"],
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": conditions,
                "containerStatuses": [_cstatus(pod, {"terminated": state})],
            }

        return self._set_pod(job, ns, change)

    def disrupt(
        self,
        job: str,
        reason: str = "PreemptionByScheduler",
        message: str = "preempted by a higher-priority pod",
        ns: str = "default",
    ) -> Obj:
        """The pod's ``DisruptionTarget`` condition, then its end (as preemption does)."""

        def change(pod: Obj) -> None:
            pod["status"].setdefault("conditions", []).append(
                _cond("DisruptionTarget", "True", reason, message)
            )

        pod = self._set_pod(job, ns, change)
        proc = self._procs.pop(pod["metadata"]["name"], None)
        if proc is not None:  # the kubelet stops the container
            _kill(proc)
        return self.terminate(job, 137, "Error", ns=ns)

    def deadline_exceeded(self, job: str, seconds: int = 60, ns: str = "default") -> Obj:
        def change(obj: Obj) -> None:
            msg = "Job was active longer than specified deadline"
            obj.setdefault("status", {}).setdefault("conditions", []).extend(
                [
                    _cond("FailureTarget", "True", "DeadlineExceeded", msg),
                    _cond("Failed", "True", "DeadlineExceeded", msg),
                ]
            )
            obj["status"]["active"] = 0

        job_obj = self.store.update("jobs", ns, job, change)
        for pod in self.objects("pods", ns, f"job-name={job}"):
            with contextlib.suppress(ApiError):
                self.store.delete("pods", ns, pod["metadata"]["name"], None)
        return job_obj

    def log(self, job: str, text: str, ns: str = "default") -> None:
        name = self.pod(job, ns)["metadata"]["name"]
        with self.store.cond:
            self.store.logs.setdefault((ns, name), bytearray()).extend(text.encode())

    def read_log(self, ns: str, name: str, query: dict[str, str]) -> bytes:
        pod = self.store.get("pods", ns, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container") or names[0]
        if container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        statuses = pod["status"].get("containerStatuses") or []
        state = next((s["state"] for s in statuses if s["name"] == container), {})
        if not state or "waiting" in state:
            why = (state.get("waiting") or {}).get("reason", "ContainerCreating")
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {why}',
            )
        with self.store.cond:
            data = bytes(self.store.logs.get((ns, name), b""))
        if query.get("limitBytes"):
            data = data[: int(query["limitBytes"])]
        return data

    # -- the kubelet (run_pods=True) ---------------------------------------------------------

    def _pod_created(self, pod: Obj) -> None:
        if self.run_pods:
            threading.Thread(target=self._kubelet, args=(pod,), daemon=True).start()

    def _pod_deleted(self, pod: Obj) -> None:
        proc = self._procs.pop(pod["metadata"]["name"], None)
        if proc is not None:
            _kill(proc)

    def _kubelet(self, pod: Obj) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        job = pod["metadata"]["labels"]["job-name"]
        container = pod["spec"]["containers"][0]
        try:
            root = self._mount_volumes(pod, container, ns)
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            for var in container.get("env") or []:
                value = str(var.get("value", ""))
                for mount_path, local in root.items():
                    if value.startswith(mount_path):
                        value = local + value[len(mount_path) :]
                env[var["name"]] = value
            self.running(job, ns)
            if not argv:
                self.terminate(job, 0, ns=ns)
                return
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self._tmp.name,
            )
            self._procs[name] = proc
            assert proc.stdout is not None
            with proc.stdout as out:
                for chunk in iter(lambda: out.read1(65536), b""):
                    with self.store.cond:
                        self.store.logs.setdefault((ns, name), bytearray()).extend(chunk)
            code = proc.wait()
            if self._procs.pop(name, None) is not None:
                self.terminate(job, code if code >= 0 else 128 - code, ns=ns)
        except (ApiError, AssertionError):
            return  # the pod was deleted meanwhile

    def _mount_volumes(self, pod: Obj, container: Obj, ns: str) -> dict[str, str]:
        """Write ConfigMap volumes to local folders (waiting, as the kubelet does, until the
        ConfigMap exists); returns mount path -> local folder."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounted: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            source = volumes.get(mount["name"], {}).get("configMap")
            if source is None:
                continue
            deadline = time.monotonic() + 10
            while True:
                try:
                    config_map = self.store.get("configmaps", ns, source["name"])
                    break
                except ApiError:
                    if time.monotonic() > deadline or self.stopping:
                        raise
                    time.sleep(0.05)
            local = Path(self._tmp.name) / pod["metadata"]["name"] / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            for key, value in (config_map.get("data") or {}).items():
                (local / key).write_text(value)
            mounted[mount["mountPath"].rstrip("/")] = str(local)
        return mounted


def _cond(type_: str, status: str, reason: str | None = None, message: str | None = None) -> Obj:
    cond: Obj = {"type": type_, "status": status, "lastTransitionTime": now()}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _cstatus(pod: Obj, state: Obj, ready: bool = False) -> Obj:
    container = pod["spec"]["containers"][0]
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
