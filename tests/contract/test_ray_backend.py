"""The ray backend against a real one-node Ray cluster (``.ci/services/ray.sh`` starts it).

That cluster declares 4 GPUs and 16 CPUs on 127.0.0.1, and its dashboard's job API
is at ``LAUNCHYARD_TEST_RAY_ADDRESS``. Every Ray job starts a supervisor process
(about a second of CPU here), so the tests run few jobs and run them side by side.
The pure parts (config checks, status mapping) are tested at the end without Ray.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from tests.conftest import require

from launchyard.backends import get_backend_class
from launchyard.backends.base import Handle, LaunchSpec, Observation, Phase
from launchyard.backends.ray import RayBackend, doctor_checks
from launchyard.backends.ray.jobs import job_output, observe
from launchyard.errors import BackendError, InvalidInputError

MakeSpec = Callable[..., LaunchSpec]  # the make_spec fixture in conftest.py
ADDRESS_ENV = "LAUNCHYARD_TEST_RAY_ADDRESS"
HOW = f"start it with .ci/services/ray.sh (start_ray exports {ADDRESS_ENV})"
_ready: list[bool] = []


def _ray_ready() -> bool:
    if not _ready:
        address = os.environ.get(ADDRESS_ENV)
        try:
            ok = bool(address) and httpx.get(f"{address}/api/version", timeout=5).is_success
        except httpx.HTTPError:
            ok = False
        _ready.append(ok)
    return _ready[0]


@pytest.fixture
def make_ray(tmp_path: Path) -> Iterator[Callable[..., RayBackend]]:
    require("Ray", _ray_ready(), HOW)
    made: list[RayBackend] = []

    def make(**options: Any) -> RayBackend:
        backend = RayBackend(tmp_path / "state", address=os.environ[ADDRESS_ENV], **options)
        made.append(backend)
        return backend

    yield make

    async def stop_all() -> None:  # leave nothing pending or running behind
        for backend in made:
            for handle in await backend.live_handles():
                await backend.cancel(handle)

    asyncio.run(stop_all())


@pytest.fixture
def ray(make_ray: Callable[..., RayBackend]) -> RayBackend:
    return make_ray()


async def wait_for(
    backend: RayBackend, handle: Handle, test: Callable[[Observation], bool], timeout: float = 60
) -> Observation:
    deadline = time.monotonic() + timeout
    while True:
        observation = await backend.poll(handle)
        if test(observation):
            return observation
        assert time.monotonic() < deadline, f"still {observation} after {timeout} s"
        await asyncio.sleep(0.2)


async def wait_for_end(backend: RayBackend, handle: Handle) -> Observation:
    return await wait_for(backend, handle, lambda o: o.phase.is_terminal)


async def read_all(backend: RayBackend, handle: Handle) -> str:
    parts, offset = [], 0
    while True:
        chunk = await backend.read_logs(handle, offset)
        if chunk.next_offset == offset:
            return "".join(parts)
        parts.append(chunk.text)
        offset = chunk.next_offset


async def until_exists(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.1)


# -- against the real Ray cluster -----------------------------------------------------------


def test_exit_codes_logs_and_idempotent_launch(
    make_ray: Callable[..., RayBackend], make_spec: MakeSpec, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    script = 'echo ran >> "$1"; echo hello; echo oops >&2; exit 3'
    failing = make_spec(["sh", "-c", script, "sh", str(ran)])
    passing = make_spec(["echo", "done"])
    ray = make_ray()

    async def scenario() -> None:
        first, second, ok = await asyncio.gather(
            ray.launch(failing), ray.launch(failing), ray.launch(passing)
        )
        assert first == second  # one job: the second submit found the first
        # A restarted agent (a new backend, nothing in memory) submits again: it adopts.
        assert await make_ray().launch(failing) == first
        observation = await wait_for_end(ray, first)
        assert observation == Observation(Phase.FAILED, exit_code=3, reason="exit code 3")
        assert sorted((await read_all(ray, first)).splitlines()) == ["hello", "oops"]
        assert ran.read_text() == "ran\n"
        observation = await wait_for_end(ray, ok)
        assert observation == Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0")
        assert await read_all(ray, ok) == "done\n"
        assert await ray.launch(failing) == first  # after the end too: nothing starts again
        assert ran.read_text() == "ran\n"

    asyncio.run(scenario())


def test_environment_and_config_reach_the_job(ray: RayBackend, make_spec: MakeSpec) -> None:
    names = ["FROM_RUNTIME_ENV", "FROM_QUEUE", "FLAG", "BOTH", "QUOTED", "LAUNCHYARD_RUN_ID"]
    run_config = {"lr": 0.001, "name": "résumé ✓"}
    script = (
        'for v in "$@"; do eval "echo $v=\\$$v"; done; '
        'echo "$LAUNCHYARD_CONFIG_JSON"; cat "$LAUNCHYARD_CONFIG_FILE"'
    )
    spec = make_spec(
        ["sh", "-c", script, "sh", *names],
        config={
            "runtime_env": {"env_vars": {"FROM_RUNTIME_ENV": "yes", "BOTH": "runtime_env"}},
            "env": {"FROM_QUEUE": 5, "FLAG": True, "QUOTED": "it's $x"},
            "entrypoint_num_cpus": 1,
        },
        env={"BOTH": "run", "LAUNCHYARD_RUN_ID": "overridden"},
        run_config=run_config,
    )

    async def scenario() -> None:
        handle = await ray.launch(spec)
        assert (await wait_for_end(ray, handle)).phase is Phase.SUCCEEDED
        lines = (await read_all(ray, handle)).splitlines()
        assert lines[:-2] == [
            "FROM_RUNTIME_ENV=yes",
            "FROM_QUEUE=5",
            "FLAG=true",
            "BOTH=run",  # the run's env wins over the queue's
            "QUOTED=it's $x",
            f"LAUNCHYARD_RUN_ID={spec.run_id}",
        ]
        assert json.loads(lines[-2]) == json.loads(lines[-1]) == run_config

    asyncio.run(scenario())


# Records the GPUs Ray gave, then waits for "go" so the jobs overlap.
HOLD_GPUS = 'echo "$CUDA_VISIBLE_DEVICES" > "$1.gpus"; while [ ! -e "$2" ]; do sleep 0.1; done'


def test_ray_places_gpus_and_a_waiting_job_says_why(
    ray: RayBackend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    specs = [
        make_spec(
            ["sh", "-c", HOLD_GPUS, "sh", str(tmp_path / f"job{i}"), str(go)],
            config={"entrypoint_num_gpus": 2},
        )
        for i in range(3)
    ]
    assert RayBackend.gpu_demand(specs[0].config) == 2

    async def scenario() -> None:
        handles = await asyncio.gather(*(ray.launch(spec) for spec in specs))
        # Two jobs hold the 4 GPUs; whichever Ray started, the third waits.
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("job*.gpus"))) < 2:
            assert time.monotonic() < deadline, "two jobs never ran together"
            await asyncio.sleep(0.1)
        running = sorted(tmp_path.glob("job*.gpus"))
        visible = [set(path.read_text().strip().split(",")) for path in running]
        assert [len(ids) for ids in visible] == [2, 2]
        assert not visible[0] & visible[1], visible  # never the same GPU
        [waiting] = [h for i, h in enumerate(handles) if not (tmp_path / f"job{i}.gpus").exists()]
        observation = await ray.poll(waiting)
        assert observation.phase is Phase.PENDING
        assert "waiting for resources" in (observation.reason or ""), observation
        assert (observation.reason or "").startswith("Ray: ")
        await ray.cancel(waiting)  # cancel works on a pending job
        observation = await wait_for_end(ray, waiting)
        assert (observation.phase, observation.reason) == (Phase.CANCELLED, "cancelled")
        go.touch()
        for handle in handles:
            if handle != waiting:
                assert (await wait_for_end(ray, handle)).phase is Phase.SUCCEEDED

    asyncio.run(scenario())


def test_cancel_and_adoption_by_a_new_backend(
    make_ray: Callable[..., RayBackend], make_spec: MakeSpec, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    spec = make_spec(["sh", "-c", 'touch "$1"; exec sleep 100', "sh", str(started)])

    async def scenario() -> None:
        first = make_ray()
        handle = await first.launch(spec)
        await until_exists(started)
        del first

        second = make_ray()  # a restarted agent: same state folder, nothing in memory
        assert await second.live_handles() == [handle]
        assert (await second.poll(handle)).phase is Phase.RUNNING
        await second.cancel(handle)
        observation = await wait_for_end(second, handle)
        assert (observation.phase, observation.reason) == (Phase.CANCELLED, "cancelled")
        await second.cancel(handle)  # silent once ended
        assert await second.live_handles() == []
        assert await make_ray(shared_dir=str(tmp_path / "other")).live_handles() == []

    asyncio.run(scenario())


def test_unknown_handles_are_lost_and_harmless(ray: RayBackend) -> None:
    bogus = [
        Handle(backend="ray", run_id="never-launched", attempt=1),
        Handle(backend="ray", run_id="x", attempt=2, data={"submission_id": "launchyard-x-2"}),
        Handle(backend="ray", run_id="x", attempt=3, data={"submission_id": "someone-elses"}),
    ]

    async def scenario() -> None:
        for handle in bogus:
            assert (await ray.poll(handle)).phase is Phase.LOST
            await ray.cancel(handle)
            assert (await ray.read_logs(handle, 0)).text == ""
            await ray.release(handle)

    asyncio.run(scenario())


def test_an_unreachable_cluster_is_a_backend_error(
    make_spec: MakeSpec, tmp_path: Path, unused_port: int
) -> None:
    backend = RayBackend(tmp_path, address=f"http://127.0.0.1:{unused_port}")
    with pytest.raises(BackendError, match=f"Ray at http://127.0.0.1:{unused_port}"):
        asyncio.run(backend.launch(make_spec(["true"])))
    checks = doctor_checks({"address": f"http://127.0.0.1:{unused_port}"})
    assert [(name, ok) for name, ok, _ in checks] == [("ray SDK", True), ("ray dashboard", False)]


def test_doctor_checks_a_working_cluster() -> None:
    require("Ray", _ray_ready(), HOW)
    checks = doctor_checks({"address": os.environ[ADDRESS_ENV]})
    assert [(name, ok) for name, ok, _ in checks] == [("ray SDK", True), ("ray dashboard", True)]


# -- without Ray --------------------------------------------------------------------------


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_registered_as_the_ray_resource(tmp_path: Path) -> None:
    assert get_backend_class("ray") is RayBackend
    assert RayBackend.assigns_gpus is False
    with pytest.raises(InvalidInputError, match="unknown ray backend option.*dashboard"):
        RayBackend.create(state_dir=tmp_path, lease_ttl_s=30, options={"dashboard": "x"})


def test_launch_refuses_bad_specs(tmp_path: Path, make_spec: MakeSpec) -> None:
    backend = RayBackend(tmp_path)

    async def scenario() -> None:
        with pytest.raises(InvalidInputError, match="needs a command"):
            await backend.launch(make_spec([]))
        with pytest.raises(InvalidInputError, match="not image"):
            await backend.launch(make_spec(["true"], image="ubuntu:24.04"))
        with pytest.raises(InvalidInputError, match="run id"):
            await backend.launch(make_spec(["true"], run_id="../escape"))

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"image": "x"}, "'image'.*allowed keys: address, entrypoint_num_gpus"),
        ({"address": "head:8265"}, "address must be the Ray dashboard's URL"),
        ({"entrypoint_num_gpus": -1}, "entrypoint_num_gpus must be a number >= 0"),
        ({"entrypoint_num_gpus": "two"}, "entrypoint_num_gpus"),
        ({"entrypoint_memory": 1.5}, "entrypoint_memory must be a whole number"),
        ({"entrypoint_resources": {"TPU": "x"}}, "entrypoint_resources.TPU"),
        ({"runtime_env": ["pip"]}, "runtime_env must be a mapping"),
        ({"runtime_env": {"env_vars": {"A": [1]}}}, "runtime_env.env_vars entry 'A'"),
        ({"env": {"A-B": "1"}}, "env name 'A-B'"),
    ],
)
def test_check_config_refuses(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RayBackend.check_config(config)


def test_check_config_accepts_templates_and_rendered_configs() -> None:
    RayBackend.check_config(
        {
            "address": "http://ray-head:8265",
            "entrypoint_num_gpus": "{{gpus}}",
            "entrypoint_num_cpus": 4,
            "entrypoint_memory": 8 * 2**30,
            "entrypoint_resources": {"accelerator_type:A100": 1},
            "runtime_env": {"working_dir": "/shared/code", "pip": ["torch"], "env_vars": {}},
            "env": {"WANDB_MODE": "offline"},
        }
    )
    assert RayBackend.gpu_demand({"entrypoint_num_gpus": 0.5}) == 1
    assert RayBackend.gpu_demand({"entrypoint_num_gpus": "{{gpus}}"}) == 0
    assert RayBackend.gpu_demand({}) == 0


def _info(status: str, **fields: Any) -> SimpleNamespace:
    values = {"message": None, "driver_exit_code": None, "error_type": None} | fields
    return SimpleNamespace(status=status, **values)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (
            _info("PENDING", message="Job has not started yet. It may be waiting for resources."),
            Observation(
                Phase.PENDING,
                reason="Ray: Job has not started yet. It may be waiting for resources.",
            ),
        ),
        (_info("RUNNING"), Observation(Phase.RUNNING)),
        (_info("SUCCEEDED", driver_exit_code=0), Observation(Phase.SUCCEEDED, 0, "exit code 0")),
        (_info("STOPPED", driver_exit_code=-15), Observation(Phase.CANCELLED, -15, "cancelled")),
        (
            _info(
                "FAILED",
                driver_exit_code=3,
                error_type="JOB_ENTRYPOINT_COMMAND_ERROR",
                message="Job entrypoint command failed with exit code 3, last logs:\nboom",
            ),
            Observation(Phase.FAILED, 3, "exit code 3"),
        ),
        (
            _info("FAILED", driver_exit_code=-9, error_type="JOB_ENTRYPOINT_COMMAND_ERROR"),
            Observation(Phase.FAILED, 137, "killed by signal SIGKILL"),
        ),
        (
            _info(
                "FAILED",
                error_type="RUNTIME_ENV_SETUP_FAILURE",
                message="Failed to set up runtime environment.\npip: no such package",
            ),
            Observation(Phase.FAILED, None, "Ray: Failed to set up runtime environment."),
        ),
        (
            _info(
                "FAILED",
                error_type="JOB_SUPERVISOR_ACTOR_DIED",
                message="Job supervisor actor died: its node was removed.",
            ),
            Observation(
                Phase.PREEMPTED, None, "Ray: Job supervisor actor died: its node was removed."
            ),
        ),
    ],
)
def test_statuses_map_to_phases_and_reasons(info: Any, expected: Observation) -> None:
    assert observe(info) == expected


def test_job_output_drops_what_ray_writes_into_the_log() -> None:
    sid, entrypoint = "launchyard-r-1", "sh -c 'echo a'"
    setup = "2026-01-02 03:04:05,678\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
    marker = f"Running entrypoint for job {sid}: {entrypoint}\n"
    log = setup + "par" + marker + "tial\nrest"  # Ray flushed its line mid-way
    assert job_output(log, 0, sid, entrypoint) == ("partial\nrest", len(log))
    text, offset = job_output(log[: len(setup) + 2], 0, sid, entrypoint)
    assert (text, offset) == ("pa", len(setup) + 2)
    assert job_output(log, offset, sid, entrypoint) == ("rtial\nrest", len(log))
    assert job_output(log, len(log), sid, entrypoint) == ("", len(log))
    other = "Running entrypoint for job someone-else: x\n"  # only this job's line is Ray's
    assert job_output(other, 0, sid, entrypoint) == (other, len(other))
