"""Docker queues end to end: real server, real agent, real dockerd, driven through the CLI.

dockerd and the image ``local/busybox:1`` come from ``.ci/services/docker.sh``; its
stand-in NVIDIA hook makes dockerd accept GPU device requests, which the container
sees as ``NVIDIA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import require
from tests.e2e.conftest import LiveServer, wait_until, write

IMAGE = "local/busybox:1"

DOCKER_QUEUE = """\
name: gpu-docker
resource: docker
config:
  image: ${{image_uri}}
  gpus: '{{{{gpus}}}}'
  memory: 64m
  volumes: ['{out}:/out']
  env: {{QUEUE_NAME: docker}}
variables:
  gpus:
    schema: {{type: integer, default: 1, minimum: 0, maximum: 4}}
"""

# Takes a lock folder per GPU it was given (mkdir is atomic: a shared id fails it), holds
# them a while, and says how many GPU locks were held meanwhile (4 = the other pair ran too).
HOLD_GPUS = """\
set -e
ids=$(echo "$NVIDIA_VISIBLE_DEVICES" | tr , ' ')
for g in $ids; do mkdir "/out/gpu-$g" || { echo "CONFLICT on $g"; exit 9; }; done
echo "queue=$QUEUE_NAME gpus=$NVIDIA_VISIBLE_DEVICES"
sleep 2
echo "held=$(ls /out | grep -c gpu-)"
for g in $ids; do rmdir "/out/gpu-$g"; done
"""


def _docker_ready() -> bool:
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        client.images.get(IMAGE)
        return True
    except docker.errors.DockerException:
        return False
    finally:
        client.close()


@pytest.fixture
def server(live_server: LiveServer, tmp_path: Path) -> LiveServer:
    require("dockerd", _docker_ready(), "start it with .ci/services/docker.sh (sets DOCKER_HOST)")
    (tmp_path / "out").mkdir()
    queue = write(tmp_path / "q.yaml", DOCKER_QUEUE.format(out=tmp_path / "out"))
    live_server.cli("queue", "create", "-f", str(queue))
    return live_server


def launch(server: LiveServer, *args: str) -> str:
    out = server.cli("launch", "-q", "gpu-docker", "-d", IMAGE, *args).stdout
    return out.strip().splitlines()[-1]


def test_docker_runs_get_disjoint_gpus_and_stream_logs(server: LiveServer) -> None:
    ids = [launch(server, "--set", "gpus=2", "--", "sh", "-c", HOLD_GPUS) for _ in range(4)]
    # All four wait in the queue first, so the agent's GPU assignment alone decides.
    server.start_agent("-q", "gpu-docker", "-j", "4", "--gpus", "0,1,2,3")
    client = server.client()
    wait_until(lambda: all(client.get_run(i)["state"] in ("finished", "failed") for i in ids), 60)
    runs = [client.get_run(i) for i in ids]
    assert [r["state"] for r in runs] == ["finished"] * 4, [r["reason"] for r in runs]
    logs = [server.cli("logs", ids[0]).stdout] + [client.logs(i)["text"] for i in ids[1:]]
    held = []
    for run, text in zip(runs, logs, strict=True):
        gpus = sorted(run["gpu_ids"])
        assert len(gpus) == 2
        assert f"queue=docker gpus={','.join(map(str, gpus))}" in text, text
        held.append(int(text.split("held=")[1].split()[0]))
    assert max(held) == 4  # two containers held all four GPUs at once, none shared
    # `starting` is reported only when a launch takes over a second (an image pull).
    shown = [t["state"] for t in runs[0]["transitions"] if t["state"] != "starting"]
    assert shown == ["queued", "claimed", "running", "finished"]


def test_docker_failures_reach_the_run_with_their_reason(server: LiveServer) -> None:
    server.start_agent("-q", "gpu-docker", "-j", "2", "--gpus", "0,1")
    exit_3 = launch(server, "--set", "gpus=0", "--", "sh", "-c", "echo bad >&2; exit 3")
    missing = (
        server.cli("launch", "-q", "gpu-docker", "-d", "local/absent:1", "--set", "gpus=0")
        .stdout.strip()
        .splitlines()[-1]
    )
    client = server.client()
    wait_until(lambda: client.get_run(exit_3)["state"] == "failed", 30)
    wait_until(lambda: client.get_run(missing)["state"] == "failed", 30)
    failed = client.get_run(exit_3)
    assert (failed["reason"], failed["exit_code"]) == ("exit code 3", 3)
    assert "bad" in server.cli("logs", exit_3).stdout
    assert "image pull failed" in client.get_run(missing)["reason"]


def test_a_restarted_agent_adopts_its_running_container(server: LiveServer) -> None:
    agent = server.start_agent("-q", "gpu-docker", "-j", "2", "--gpus", "0,1")
    run_id = launch(server, "--set", "gpus=1", "--", "sh", "-c", "echo up; sleep 3; echo end")
    client = server.client()
    wait_until(lambda: "up" in client.logs(run_id)["text"], 30)
    agent.kill()  # no goodbye: the container keeps running without its agent
    agent.wait()
    server.start_agent("-q", "gpu-docker", "-j", "2", "--gpus", "0,1", log_name="agent-2.log")
    wait_until(lambda: client.get_run(run_id)["state"] == "finished", 30)
    assert client.logs(run_id)["text"] == "up\nend\n"
    assert [t["state"] for t in client.get_run(run_id)["transitions"]][-2:] == [
        "running",
        "finished",
    ]
