"""The docker backend against a real dockerd (``.ci/services/docker.sh`` starts one).

The test image ``local/busybox:1`` is a busybox root filesystem made with ``docker
import`` (no registry here). dockerd has a stand-in ``nvidia-container-runtime-hook``
on its PATH, so GPU device requests are accepted and show up as
``NVIDIA_VISIBLE_DEVICES``. Waits poll with deadlines; nothing sleeps for long.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import require

from launchyard.backends import get_backend_class
from launchyard.backends.base import Handle, LaunchSpec, Observation, Phase
from launchyard.errors import BackendError, InvalidInputError

IMAGE = "local/busybox:1"
HOW = "start dockerd and import local/busybox:1 with .ci/services/docker.sh (sets DOCKER_HOST)"

docker = pytest.importorskip("docker")

from launchyard.backends.build import build_image, dockerfile_for, image_tag  # noqa: E402
from launchyard.backends.docker import DockerBackend  # noqa: E402
from launchyard.backends.docker.logs import MAX_LOG_CHUNK  # noqa: E402

MakeDocker = Callable[..., DockerBackend]
MakeSpec = Callable[..., LaunchSpec]  # the make_spec fixture in conftest.py


def _engine_ready() -> bool:
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
def make_docker(tmp_path: Path) -> Iterator[MakeDocker]:
    """Backends on one state folder (as a restarted agent would be); all cleaned up after."""
    require("dockerd", _engine_ready(), HOW)
    made: list[DockerBackend] = []

    def make(state: Path | None = None, **options: Any) -> DockerBackend:
        backend = DockerBackend(state or tmp_path / "state", **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        for container in backend.client.containers.list(
            all=True, filters={"label": f"launchyard.owner={backend.owner}"}
        ):
            container.remove(force=True)
        asyncio.run(backend.close())


@pytest.fixture
def backend(make_docker: MakeDocker) -> DockerBackend:
    return make_docker()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def wait_for_end(backend: DockerBackend, handle: Handle, timeout: float = 20) -> Observation:
    deadline = time.monotonic() + timeout
    while not (observation := await backend.poll(handle)).phase.is_terminal:
        assert time.monotonic() < deadline, f"still {observation} after {timeout} s"
        await asyncio.sleep(0.05)
    return observation


async def wait_for_output(
    backend: DockerBackend, handle: Handle, needle: str, timeout: float = 10
) -> str:
    deadline = time.monotonic() + timeout
    while needle not in (text := await read_all(backend, handle)):
        assert time.monotonic() < deadline, f"no {needle!r} in {text!r} after {timeout} s"
        await asyncio.sleep(0.05)
    return text


async def read_all(backend: DockerBackend, handle: Handle, offset: int = 0) -> str:
    parts = []
    while (chunk := await backend.read_logs(handle, offset)).next_offset != offset:
        parts.append(chunk.text)
        offset = chunk.next_offset
    return "".join(parts)


async def finish(backend: DockerBackend, handle: Handle) -> tuple[Observation, str]:
    observation = await wait_for_end(backend, handle)
    return observation, await read_all(backend, handle)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def containers_of(backend: DockerBackend, run_id: str) -> list[Any]:
    found: list[Any] = backend.client.containers.list(
        all=True, filters={"label": f"launchyard.run-id={run_id}"}
    )
    return found


# -- running, exit codes, logs -------------------------------------------------------------


def test_success_reports_exit_code_0_and_the_output(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    spec = make_spec(sh("echo hello; echo world"), image=IMAGE)
    observation, output = run(finish(backend, run(backend.launch(spec))))
    assert observation == Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0")
    assert output == "hello\nworld\n"


def test_failure_keeps_exit_code_and_both_streams(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    spec = make_spec(sh("echo out; echo err >&2; exit 3"), image=IMAGE)
    observation, output = run(finish(backend, run(backend.launch(spec))))
    assert (observation.phase, observation.exit_code) == (Phase.FAILED, 3)
    assert observation.reason == "exit code 3"
    assert sorted(output.splitlines()) == ["err", "out"]


def test_no_command_runs_the_images_own(backend: DockerBackend, make_spec: MakeSpec) -> None:
    observation, output = run(finish(backend, run(backend.launch(make_spec([], image=IMAGE)))))
    assert observation.phase is Phase.SUCCEEDED
    assert output == "hello from the image\n"


def test_logs_are_read_in_pieces_without_loss_or_repeats(
    make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    backend = make_docker()
    line = "0123456789" * 12
    spec = make_spec(sh(f"yes {line} | head -n 10000; printf 'caf\\303\\251'"), image=IMAGE)
    handle = run(backend.launch(spec))
    assert run(wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
    expected = f"{line}\n" * 10000 + "café"
    assert len(expected.encode()) > MAX_LOG_CHUNK
    first = run(backend.read_logs(handle, 0))
    assert len(first.text.encode()) <= MAX_LOG_CHUNK
    assert first.text + run(read_all(backend, handle, first.next_offset)) == expected
    # A restarted agent resumes at the offset it stored, from a fresh mirror of the output.
    again = make_docker(state=backend.state_dir.parent / "other-state")
    assert run(read_all(again, handle, first.next_offset)) == expected[len(first.text) :]


def test_logs_stream_while_the_container_runs(backend: DockerBackend, make_spec: MakeSpec) -> None:
    spec = make_spec(sh("echo started; sleep 30"), image=IMAGE)
    handle = run(backend.launch(spec))
    assert run(wait_for_output(backend, handle, "started\n")) == "started\n"
    assert run(backend.poll(handle)).phase is Phase.RUNNING
    run(backend.cancel(handle, grace_s=0))


def test_out_of_memory_is_reported_as_oomkilled(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    # tail keeps a whole "line" in memory, and /dev/zero has no newline
    spec = make_spec(sh("head -c 200000000 /dev/zero | tail"), image=IMAGE, config={"memory": "8m"})
    observation = run(wait_for_end(backend, run(backend.launch(spec))))
    assert observation.phase is Phase.FAILED
    assert observation.reason == "OOMKilled (memory limit 8 MiB)"


# -- launching ----------------------------------------------------------------------------


def test_launch_is_idempotent_per_attempt(backend: DockerBackend, make_spec: MakeSpec) -> None:
    spec = make_spec(sh("echo once; sleep 30"), image=IMAGE)
    first = run(backend.launch(spec))
    assert run(backend.launch(spec)) == first
    assert [c.name for c in containers_of(backend, spec.run_id)] == [f"launchyard-{spec.key}"]
    assert run(wait_for_output(backend, first, "once\n")) == "once\n"
    retry = make_spec(sh("echo retry"), image=IMAGE, run_id=spec.run_id, attempt=2)
    second = run(backend.launch(retry))
    assert second.data["container"] == f"launchyard-{spec.run_id}-2"
    assert len(containers_of(backend, spec.run_id)) == 2
    run(backend.cancel(first, grace_s=0))


def test_env_labels_and_run_config_reach_the_container(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    spec = make_spec(
        sh('echo "A=$A B=$B C=$C ID=$LAUNCHYARD_RUN_ID"; cat "$LAUNCHYARD_CONFIG_FILE"'),
        image=IMAGE,
        config={"env": {"A": "queue", "B": 2, "C": True}},
        env={"A": "run"},
        run_config={"lr": 0.1, "layers": [1, 2]},
    )
    handle = run(backend.launch(spec))
    observation, output = run(finish(backend, handle))
    assert observation.phase is Phase.SUCCEEDED
    first, _, config = output.partition("\n")
    assert first == f"A=run B=2 C=true ID={spec.run_id}"
    assert json.loads(config) == {"lr": 0.1, "layers": [1, 2]}
    (container,) = containers_of(backend, spec.run_id)
    assert spec.labels().items() <= container.labels.items()


def test_assigned_gpu_ids_are_the_visible_devices(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    with_gpus = make_spec(sh("echo $NVIDIA_VISIBLE_DEVICES"), image=IMAGE, gpus=2, gpu_ids=[1, 2])
    without = make_spec(sh("echo $NVIDIA_VISIBLE_DEVICES"), image=IMAGE)
    assert run(finish(backend, run(backend.launch(with_gpus))))[1] == "1,2\n"
    assert run(finish(backend, run(backend.launch(without))))[1] == "void\n"


def test_cache_dir_is_shared_between_runs(
    backend: DockerBackend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    config = {"cache_dir": str(tmp_path / "cache")}
    writer = make_spec(
        sh("echo weights > /root/.cache/model.bin; echo $HF_HOME"), image=IMAGE, config=config
    )
    assert run(finish(backend, run(backend.launch(writer))))[1] == "/root/.cache/huggingface\n"
    assert (tmp_path / "cache" / "model.bin").read_text() == "weights\n"
    reader = make_spec(
        sh("cat /data/model.bin"), image=IMAGE, config={**config, "cache_path": "/data"}
    )
    assert run(finish(backend, run(backend.launch(reader))))[1] == "weights\n"


def test_missing_image_fails_launch_with_the_reason(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    with socket.socket() as sock:  # a loopback registry that refuses at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    missing = f"127.0.0.1:{port}/launchyard-test/missing:1"
    with pytest.raises(BackendError, match="image pull failed: .*missing:1"):
        run(backend.launch(make_spec(sh("true"), image=missing)))
    never = make_spec(sh("true"), image="local/absent:1", config={"pull": "never"})
    with pytest.raises(BackendError, match="not on the Docker host .* pull: never"):
        run(backend.launch(never))
    with pytest.raises(InvalidInputError, match="needs an image: -d IMAGE"):
        run(backend.launch(make_spec(sh("true"))))


def test_a_command_the_image_lacks_fails_launch_and_leaves_nothing(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    spec = make_spec(["no-such-program"], image=IMAGE)
    with pytest.raises(BackendError, match="the container did not start: .*no-such-program"):
        run(backend.launch(spec))
    assert containers_of(backend, spec.run_id) == []


def test_queue_image_wins_over_the_runs(backend: DockerBackend, make_spec: MakeSpec) -> None:
    spec = make_spec(sh("echo pinned"), image="local/absent:1", config={"image": IMAGE})
    assert run(finish(backend, run(backend.launch(spec))))[1] == "pinned\n"


# -- cancel, adoption, release -------------------------------------------------------------


def test_cancel_stops_then_kills_and_reports_cancelled(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    # PID 1 ignores SIGTERM it has no handler for: docker stop must SIGKILL after the grace
    handle = run(backend.launch(make_spec(sh("echo up; sleep 60"), image=IMAGE)))
    run(wait_for_output(backend, handle, "up\n"))
    started = time.monotonic()
    run(backend.cancel(handle, grace_s=1))
    assert 0.5 < time.monotonic() - started < 10
    observation = run(backend.poll(handle))
    assert (observation.phase, observation.exit_code) == (Phase.CANCELLED, 137)
    (container,) = containers_of(backend, handle.run_id)
    assert container.status == "exited"
    run(backend.cancel(handle, grace_s=0))  # again: silent
    run(backend.release(handle))
    assert containers_of(backend, handle.run_id) == []
    run(backend.cancel(handle, grace_s=0))  # gone: silent


def test_a_run_that_handles_sigterm_ends_within_the_grace(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    script = "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    handle = run(backend.launch(make_spec(sh(script), image=IMAGE)))
    run(wait_for_output(backend, handle, "up\n"))
    run(backend.cancel(handle, grace_s=30))
    observation, output = run(finish(backend, handle))
    assert (observation.phase, observation.exit_code) == (Phase.CANCELLED, 0)
    assert output == "up\nbye\n"


def test_a_killed_run_that_nobody_cancelled_has_failed(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    handle = run(backend.launch(make_spec(sh("sleep 60"), image=IMAGE)))
    backend.client.containers.get(handle.data["container"]).kill()
    observation = run(wait_for_end(backend, handle))
    assert (observation.phase, observation.exit_code) == (Phase.FAILED, 137)
    assert observation.reason is not None and observation.reason.startswith("exit code 137")


def test_a_restarted_agent_adopts_its_containers(
    make_docker: MakeDocker, make_spec: MakeSpec, tmp_path: Path
) -> None:
    first = make_docker()
    spec = make_spec(sh("echo adopted; sleep 60"), image=IMAGE)
    handle = run(first.launch(spec))
    run(first.close())
    restarted = make_docker()
    assert run(restarted.live_handles()) == [handle]
    assert run(make_docker(state=tmp_path / "another-agent").live_handles()) == []
    assert run(restarted.poll(handle)).phase is Phase.RUNNING
    assert run(wait_for_output(restarted, handle, "adopted\n")) == "adopted\n"
    run(restarted.cancel(handle, grace_s=0))
    assert run(restarted.poll(handle)).phase is Phase.CANCELLED
    assert run(restarted.live_handles()) == []


def test_a_container_removed_from_outside_is_lost(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    handle = run(backend.launch(make_spec(sh("sleep 60"), image=IMAGE)))
    backend.client.containers.get(handle.data["container"]).remove(force=True)
    observation = run(backend.poll(handle))
    assert observation.phase is Phase.LOST
    assert observation.reason is not None and "is gone" in observation.reason


def test_release_removes_the_container_and_its_files(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    spec = make_spec(sh("echo done"), image=IMAGE)
    handle = run(backend.launch(spec))
    run(finish(backend, handle))
    run(backend.release(handle))
    assert containers_of(backend, spec.run_id) == []
    assert not (backend.runs_dir / spec.key).exists()
    assert run(backend.poll(handle)).phase is Phase.LOST
    run(backend.release(handle))  # again: silent


def test_create_names_the_engine_it_cannot_reach(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-docker.sock"
    with pytest.raises(BackendError, match="Docker engine not reachable at unix://.*start dockerd"):
        DockerBackend.create(state_dir=tmp_path, lease_ttl_s=30, options={"base_url": url})
    with pytest.raises(InvalidInputError, match="backends.docker cannot hold 'host'"):
        DockerBackend.create(state_dir=tmp_path, lease_ttl_s=30, options={"host": url})


# -- queue configs (no engine needed) ----------------------------------------------------


def test_the_registry_knows_docker() -> None:
    backend_class = get_backend_class("docker")
    assert backend_class is DockerBackend
    assert backend_class.assigns_gpus


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"image": "${image_uri}", "gpus": "{{gpus}}", "memory": "{{mem}}", "cpus": "{{cpus}}"},
        {
            "gpus": 2,
            "cpus": 4,
            "memory": "12g",
            "shm_size": "1Gi",
            "env": {"HF_HOME": "/root/.cache/huggingface", "N": 1},
            "volumes": ["/srv/data:/data:ro", "named:/named", "{{data}}:/data2"],
            "network": "bridge",
            "user": "1000:1000",
            "working_dir": "/work",
            "cache_dir": "/srv/cache",
            "cache_path": "/cache",
            "pull": "never",
        },
    ],
)
def test_valid_queue_configs_are_accepted(config: dict[str, Any]) -> None:
    DockerBackend.check_config(config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"gpu": 1}, "cannot hold 'gpu'; allowed keys: image, gpus, env"),
        ({"gpus": -1}, "gpus: -1 must be a whole number"),
        ({"gpus": "two"}, "gpus: 'two' must be a whole number"),
        ({"memory": "lots"}, "memory: 'lots' is not a size"),
        ({"cpus": 0}, "cpus: 0 must be a number of CPUs > 0"),
        ({"pull": "sometimes"}, "pull: 'sometimes' must be one of: missing, always, never"),
        ({"volumes": "/a:/b"}, "must be a list"),
        ({"volumes": ["/a"]}, "must read 'host:container'"),
        ({"volumes": ["/a:b"]}, "absolute path inside the container"),
        ({"volumes": ["/a:/b:rx"]}, "must read 'host:container'"),
        ({"env": ["A=1"]}, "env: .* must be a mapping"),
        ({"working_dir": "work"}, "absolute path inside the container"),
    ],
)
def test_invalid_queue_configs_name_the_key_and_rule(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        DockerBackend.check_config(config)


def test_gpu_demand_is_the_gpus_count() -> None:
    assert DockerBackend.gpu_demand({"gpus": 2}) == 2
    assert DockerBackend.gpu_demand({"gpus": "3"}) == 3
    assert DockerBackend.gpu_demand({}) == 0


# -- image builds --------------------------------------------------------------------------


class _NoBuilds:
    """A client whose builds fail the test: proves a cache hit built nothing."""

    def __init__(self, client: Any) -> None:
        self.images = self
        self._client = client

    def get(self, tag: str) -> Any:
        return self._client.images.get(tag)

    def build(self, **kwargs: Any) -> Any:
        raise AssertionError("an unchanged folder was built again")


def test_a_folder_is_built_once_and_tagged_by_its_content(
    backend: DockerBackend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    code = tmp_path / "my code"
    code.mkdir()
    (code / "Dockerfile").write_text(
        f'FROM {IMAGE}\nCOPY message.txt /message.txt\nCMD ["cat", "/message.txt"]\n'
    )
    (code / "message.txt").write_text("built v1\n")
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    tag = build_image(backend.client, code)
    assert tag.startswith("launchyard-build/my-code:")
    assert build_image(_NoBuilds(backend.client), code) == tag  # cache hit
    (code / "__pycache__" / "x.pyc").write_bytes(b"still ignored")
    assert image_tag(code) == tag
    spec = make_spec([], image=tag, config={"pull": "never"})
    assert run(finish(backend, run(backend.launch(spec))))[1] == "built v1\n"
    (code / "message.txt").write_text("built v2\n")
    changed = build_image(backend.client, code)
    assert changed != tag
    spec = make_spec([], image=changed, config={"pull": "never"})
    assert run(finish(backend, run(backend.launch(spec))))[1] == "built v2\n"
    for built in (tag, changed):
        backend.client.images.remove(built, force=True)


def test_a_failing_build_says_why(backend: DockerBackend, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nRUN echo compiling && exit 7\n")
    with pytest.raises(BackendError, match="(?s)image build failed: .*compiling"):
        build_image(backend.client, tmp_path)


def test_a_dockerfile_is_generated_for_requirements_and_an_entry_point(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "train.py").write_text("print('hi')\n")
    name, text = dockerfile_for(tmp_path, base_image="python:3.12-slim")
    assert name == "Dockerfile.launchyard"
    assert text is not None and text.splitlines() == [
        "FROM python:3.12-slim",
        "WORKDIR /app",
        "COPY requirements.txt /app/requirements.txt",
        "RUN pip install --no-cache-dir -r /app/requirements.txt",
        "COPY . /app",
        'CMD ["python", "train.py"]',
    ]
    assert image_tag(tmp_path, "python:3.12-slim") != image_tag(tmp_path, "python:3.11-slim")
    (tmp_path / "train.py").unlink()
    with pytest.raises(InvalidInputError, match="add a Dockerfile, or a requirements.txt"):
        dockerfile_for(tmp_path)
