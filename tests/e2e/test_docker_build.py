"""`launchyard launch --build PATH`: build a code folder into an image, run it, reuse it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import require
from tests.e2e.conftest import LiveServer, wait_until, write
from tests.e2e.test_docker import IMAGE, _docker_ready

QUEUE = "name: built\nresource: docker\nconfig: {gpus: 0}\n"


@pytest.fixture
def docker_server(live_server: LiveServer, tmp_path: Path) -> LiveServer:
    require("dockerd with local/busybox:1", _docker_ready(), "run .ci/services/docker.sh")
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", QUEUE)))
    live_server.start_agent("-q", "built", "-j", "1", "--gpus", "none")
    return live_server


def test_build_runs_the_folder_and_records_the_image(
    docker_server: LiveServer, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    write(code / "hello.txt", "hello from a built image\n")
    write(code / "Dockerfile", f"FROM {IMAGE}\nCOPY hello.txt /hello.txt\nCMD cat /hello.txt\n")
    first = docker_server.cli("launch", "-q", "built", "--build", str(code), "--follow")
    assert "hello from a built image" in first.stdout
    assert "image launchyard-build/code:" in first.stderr
    tag = first.stderr.split("image ", 1)[1].split()[0]
    again = docker_server.cli("launch", "-q", "built", "--build", str(code), "--json")
    assert json.loads(again.stdout)["image"] == tag  # unchanged folder: same image, no rebuild
    run_id = json.loads(again.stdout)["id"]
    wait_until(lambda: docker_server.client().get_run(run_id)["state"] == "finished", 60)
    job = docker_server.client().get_run(run_id)["job"]
    jobs = json.loads(docker_server.cli("jobs", "show", job, "--json").stdout)
    assert jobs["versions"][-1]["spec"]["image"] == tag  # relaunchable without the code
