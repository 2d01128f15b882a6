"""Slurm and Ray queues end to end: real server, real agent, real engines, driven by the CLI.

Slurm comes from ``.ci/services/slurm.sh`` (SLURM_CONF), Ray from ``.ci/services/ray.sh``
(LAUNCHYARD_TEST_RAY_ADDRESS). The agent gets its backend options from ``-c agent.yaml``,
as a user would give them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
from tests.conftest import require
from tests.e2e.conftest import LiveServer, wait_until, write

SLURM_QUEUE = """\
name: slurm-gpu
resource: slurm
config:
  gres: 'gpu:{{gpus}}'
  cpus_per_task: 1
  time: '10'
  env: {QUEUE_NAME: slurm}
variables:
  gpus:
    schema: {type: integer, default: 1, minimum: 1, maximum: 4}
"""

RAY_QUEUE = """\
name: ray-gpu
resource: ray
config:
  entrypoint_num_gpus: '{{gpus}}'
  env: {QUEUE_NAME: ray}
variables:
  gpus:
    schema: {type: integer, default: 1, minimum: 0, maximum: 4}
"""

REPORT_AND_FAIL = (
    'echo "queue=$QUEUE_NAME gpus=$CUDA_VISIBLE_DEVICES run=$LAUNCHYARD_RUN_ID"; exit 3'
)


def _slurm_ready() -> bool:
    if shutil.which("sinfo") is None or not os.environ.get("SLURM_CONF"):
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    return done.returncode == 0


def _ray_ready() -> bool:
    address = os.environ.get("LAUNCHYARD_TEST_RAY_ADDRESS")
    try:
        return bool(address) and httpx.get(f"{address}/api/version", timeout=5).is_success
    except httpx.HTTPError:
        return False


def run_of(server: LiveServer, run_id: str) -> dict:  # type: ignore[type-arg]
    shown: dict = json.loads(server.cli("runs", "show", run_id, "--json").stdout)  # type: ignore[type-arg]
    return shown


def follow(server: LiveServer, queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("launch", "-q", queue, "--follow", *args, check=False, timeout=90)


def test_slurm_queue(live_server: LiveServer, tmp_path: Path) -> None:
    require("Slurm", _slurm_ready(), "start it with .ci/services/slurm.sh (exports SLURM_CONF)")
    server = live_server
    server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", SLURM_QUEUE)))
    agent_config = write(
        tmp_path / "agent.yaml",
        f"backends:\n  slurm: {{slurm_conf: {os.environ['SLURM_CONF']}, "
        f"shared_dir: {tmp_path / 'shared'}}}\n",
    )
    server.start_agent("-q", "slurm-gpu", "-j", "2", "-c", str(agent_config))

    # A run that holds all 4 GPUs until "go" exists, and one that must wait for them.
    go = tmp_path / "go"
    hold = f'echo holding $CUDA_VISIBLE_DEVICES; while [ ! -e "{go}" ]; do sleep 0.1; done'
    holder = server.cli("launch", "-q", "slurm-gpu", "--set", "gpus=4", "--", "sh", "-c", hold)
    holder_id = holder.stdout.strip().splitlines()[-1]
    client = server.client()
    wait_until(lambda: client.get_run(holder_id)["state"] == "running", 30)
    waiting = server.cli("launch", "-q", "slurm-gpu", "--set", "gpus=2", "--", "true")
    waiting_id = waiting.stdout.strip().splitlines()[-1]
    wait_until(lambda: "(Resources)" in (client.get_run(waiting_id)["reason"] or ""), 30)
    assert client.get_run(waiting_id)["state"] == "starting"
    go.touch()
    wait_until(lambda: client.get_run(waiting_id)["state"] == "finished", 30)
    assert "holding 0,1,2,3" in server.cli("logs", holder_id).stdout

    done = follow(server, "slurm-gpu", "--set", "gpus=2", "--", "sh", "-c", REPORT_AND_FAIL)
    assert done.returncode == 3, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    printed = [line for line in done.stdout.splitlines() if line.startswith("queue=")]
    assert len(printed) == 1 and printed[0].startswith("queue=slurm gpus="), done.stdout
    assert len(printed[0].split("gpus=")[1].split()[0].split(",")) == 2  # Slurm gave 2
    assert printed[0].endswith(f"run={run_id}")
    run = run_of(server, run_id)
    assert (run["state"], run["reason"], run["exit_code"]) == ("failed", "exit code 3", 3)


def test_ray_queue(live_server: LiveServer, tmp_path: Path) -> None:
    require("Ray", _ray_ready(), "start it with .ci/services/ray.sh")
    server = live_server
    server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", RAY_QUEUE)))
    address = os.environ["LAUNCHYARD_TEST_RAY_ADDRESS"]
    agent_config = write(tmp_path / "agent.yaml", f"backends:\n  ray: {{address: '{address}'}}\n")
    server.start_agent("-q", "ray-gpu", "-c", str(agent_config))

    done = follow(server, "ray-gpu", "--set", "gpus=2", "--", "sh", "-c", REPORT_AND_FAIL)
    assert done.returncode == 3, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    printed = [line for line in done.stdout.splitlines() if line.startswith("queue=")]
    assert len(printed) == 1 and printed[0].startswith("queue=ray gpus="), done.stdout
    assert len(printed[0].split("gpus=")[1].split()[0].split(",")) == 2
    assert printed[0].endswith(f"run={run_id}")
    run = run_of(server, run_id)
    assert (run["state"], run["reason"], run["exit_code"]) == ("failed", "exit code 3", 3)
