"""The slurm backend against a real Slurm (``.ci/services/slurm.sh`` starts one).

That Slurm is Debian's slurmctld + slurmd + munged with one node of 16 CPUs and 4
GPUs declared as generic resources (fake ``/dev/nvidia[0-3]``), fast scheduler
intervals and a job-completion log. Jobs start in well under a second; waits poll
with deadlines. The pure parts (config checks, state mapping) are tested at the end
without Slurm.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import require

from launchyard.backends import get_backend_class
from launchyard.backends.base import Handle, LaunchSpec, Observation, Phase
from launchyard.backends.slurm import SlurmBackend, doctor_checks, files
from launchyard.backends.slurm.config import check_config, gpu_demand, sbatch_options
from launchyard.backends.slurm.states import (
    JobRecord,
    find_in_jobcomp,
    observe,
    parse_key_values,
    parse_squeue,
)
from launchyard.errors import BackendError, InvalidInputError, MissingDependencyError

MakeSpec = Callable[..., LaunchSpec]  # the make_spec fixture in conftest.py
HOW = "start it with .ci/services/slurm.sh (start_slurm exports SLURM_CONF)"
_ready: list[bool] = []


def _slurm_ready() -> bool:
    if not _ready:
        ok = shutil.which("sinfo") is not None and bool(os.environ.get("SLURM_CONF"))
        if ok:
            done = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10
            )
            ok = done.returncode == 0 and any(s in done.stdout for s in ("idle", "mix", "alloc"))
        _ready.append(ok)
    return _ready[0]


@pytest.fixture
def make_slurm(tmp_path: Path) -> Iterator[Callable[..., SlurmBackend]]:
    require("Slurm", _slurm_ready(), HOW)
    made: list[SlurmBackend] = []

    def make(**options: Any) -> SlurmBackend:
        backend = SlurmBackend(tmp_path / "state", **options)
        made.append(backend)
        return backend

    yield make

    async def stop_all() -> None:  # leave nothing queued or running behind
        for backend in made:
            for handle in await backend.live_handles():
                await backend.cancel(handle)

    asyncio.run(stop_all())


@pytest.fixture
def slurm(make_slurm: Callable[..., SlurmBackend]) -> SlurmBackend:
    return make_slurm()


async def wait_for_end(backend: SlurmBackend, handle: Handle, timeout: float = 20) -> Observation:
    return await wait_for(backend, handle, lambda o: o.phase.is_terminal, timeout)


async def wait_for(
    backend: SlurmBackend, handle: Handle, test: Callable[[Observation], bool], timeout: float = 20
) -> Observation:
    deadline = time.monotonic() + timeout
    while True:
        observation = await backend.poll(handle)
        if test(observation):
            return observation
        assert time.monotonic() < deadline, f"still {observation} after {timeout} s"
        await asyncio.sleep(0.1)


async def read_all(backend: SlurmBackend, handle: Handle) -> str:
    parts, offset = [], 0
    while True:
        chunk = await backend.read_logs(handle, offset)
        if chunk.next_offset == offset:
            return "".join(parts)
        parts.append(chunk.text)
        offset = chunk.next_offset


async def until_exists(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.05)


# -- against the real Slurm -----------------------------------------------------------------


def test_exit_codes_and_logs(slurm: SlurmBackend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        failing = await slurm.launch(make_spec(["sh", "-c", "echo hello; echo oops >&2; exit 3"]))
        passing = await slurm.launch(make_spec(["echo", "done"]))
        assert failing.backend == "slurm"
        observation = await wait_for_end(slurm, failing)
        assert observation == Observation(Phase.FAILED, exit_code=3, reason="exit code 3")
        assert await read_all(slurm, failing) == "hello\noops\n"
        observation = await wait_for_end(slurm, passing)
        assert observation == Observation(Phase.SUCCEEDED, exit_code=0, reason="exit code 0")
        assert await read_all(slurm, passing) == "done\n"
        # Once the controller forgets a job, its end is in the job-completion log.
        jobcomp = await slurm._jobcomp_location()
        assert jobcomp is not None
        job_id, name = failing.data["job_id"], failing.data["name"]
        record = await asyncio.to_thread(files.search_jobcomp, jobcomp, job_id, name)
        assert record is not None
        assert observe(record) == Observation(Phase.FAILED, exit_code=3, reason="exit code 3")

    asyncio.run(scenario())


def test_launch_is_idempotent(
    make_slurm: Callable[..., SlurmBackend], make_spec: MakeSpec, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    spec = make_spec(["sh", "-c", 'echo ran >> "$1"; sleep 0.5', "sh", str(ran)])
    slurm = make_slurm()

    async def scenario() -> None:
        first, second = await asyncio.gather(slurm.launch(spec), slurm.launch(spec))
        assert first == second
        # Another agent (other state folder) finds the job by its name instead of submitting.
        elsewhere = SlurmBackend(tmp_path / "other-agent")
        assert (await elsewhere.launch(spec)).data["job_id"] == first.data["job_id"]
        assert (await wait_for_end(slurm, first)).phase is Phase.SUCCEEDED
        assert await slurm.launch(spec) == first  # after the end too: nothing starts again
        assert ran.read_text() == "ran\n"

    asyncio.run(scenario())


def test_environment_and_config_reach_the_job(
    make_slurm: Callable[..., SlurmBackend], make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_AGENT", "agent")
    monkeypatch.setenv("LAUNCHYARD_API_KEY", "secret-of-the-agent")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    slurm = make_slurm()
    names = ["FROM_AGENT", "FROM_QUEUE", "FLAG", "BOTH", "QUOTED", "LAUNCHYARD_RUN_ID"]
    names += ["LAUNCHYARD_API_KEY", "CUDA_VISIBLE_DEVICES"]
    run_config = {"lr": 0.001, "name": "résumé ✓", "big": "x" * 300_000}
    spec = make_spec(
        ["sh", "-c", 'for v in "$@"; do eval "echo $v=\\$$v"; done; cat "$LAUNCHYARD_CONFIG_FILE"']
        + ["sh", *names],
        config={"env": {"FROM_QUEUE": 5, "FLAG": True, "BOTH": "queue", "QUOTED": "it's $x"}},
        env={"BOTH": "run", "LAUNCHYARD_RUN_ID": "overridden"},
        run_config=run_config,
    )

    async def scenario() -> None:
        handle = await slurm.launch(spec)
        assert (await wait_for_end(slurm, handle)).phase is Phase.SUCCEEDED
        lines = (await read_all(slurm, handle)).splitlines()
        assert lines[:-1] == [
            "FROM_AGENT=agent",  # sbatch exports the agent's environment ...
            "FROM_QUEUE=5",
            "FLAG=true",
            "BOTH=run",  # the run's env wins over the queue's
            "QUOTED=it's $x",
            f"LAUNCHYARD_RUN_ID={spec.run_id}",
            "LAUNCHYARD_API_KEY=",  # ... but not the agent's own settings
            "CUDA_VISIBLE_DEVICES=",  # nor its GPUs: Slurm sets them for the GPUs it gives
        ]
        assert json.loads(lines[-1]) == run_config

    asyncio.run(scenario())


def test_cancel_running_and_pending_jobs(
    slurm: SlurmBackend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    running_spec = make_spec(["sh", "-c", 'touch "$1"; exec sleep 100', "sh", str(started)])
    later_spec = make_spec(["true"], config={"extra": ["--begin=now+600"]})

    async def scenario() -> None:
        running, later = await slurm.launch(running_spec), await slurm.launch(later_spec)
        await until_exists(started)
        assert (await slurm.poll(running)).phase is Phase.RUNNING
        waiting = await wait_for(slurm, later, lambda o: "BeginTime" in (o.reason or ""))
        assert waiting == Observation(
            Phase.PENDING, reason="Slurm: waiting for its start time (BeginTime)"
        )
        await slurm.cancel(running)
        await slurm.cancel(later)
        for handle in (running, later):
            observation = await wait_for_end(slurm, handle)
            assert (observation.phase, observation.reason) == (Phase.CANCELLED, "cancelled")
        await slurm.cancel(running)  # silent once ended
        assert (await slurm.poll(running)).phase is Phase.CANCELLED

    asyncio.run(scenario())


def test_a_new_backend_adopts_live_jobs(
    make_slurm: Callable[..., SlurmBackend], make_spec: MakeSpec
) -> None:
    async def scenario() -> None:
        first = make_slurm()
        handle = await first.launch(make_spec(["sleep", "100"]))
        ended = await first.launch(make_spec(["true"]))
        await wait_for_end(first, ended)
        del first

        second = make_slurm()  # a restarted agent: same state folder, nothing in memory
        assert await second.live_handles() == [handle]
        assert (await wait_for(second, handle, lambda o: o.phase is Phase.RUNNING)).reason is None
        await second.cancel(handle)
        assert (await wait_for_end(second, handle)).phase is Phase.CANCELLED
        assert await second.live_handles() == []

    asyncio.run(scenario())


# Records the GPUs Slurm gave, then waits for "go" so the jobs overlap.
HOLD_GPUS = (
    'echo "$CUDA_VISIBLE_DEVICES/$SLURM_JOB_GPUS" > "$1.gpus"; '
    'while [ ! -e "$2" ]; do sleep 0.05; done'
)


def test_slurm_places_gpus(slurm: SlurmBackend, make_spec: MakeSpec, tmp_path: Path) -> None:
    go = tmp_path / "go"
    specs = [
        make_spec(
            ["sh", "-c", HOLD_GPUS, "sh", str(tmp_path / f"job{i}"), str(go)],
            config={"gres": "gpu:2"},
        )
        for i in range(3)
    ]
    assert all(SlurmBackend.gpu_demand(spec.config) == 2 for spec in specs)

    async def scenario() -> None:
        handles = [await slurm.launch(spec) for spec in specs]
        for i in (0, 1):
            await until_exists(tmp_path / f"job{i}.gpus")
        both = [(tmp_path / f"job{i}.gpus").read_text().strip() for i in (0, 1)]
        visible = [set(text.split("/")[0].split(",")) for text in both]
        assert [len(ids) for ids in visible] == [2, 2]
        assert not visible[0] & visible[1], both  # two jobs at once, never the same GPU
        assert all(text.split("/")[0] == text.split("/")[1] for text in both)
        third = await wait_for(
            slurm, handles[2], lambda o: "(Resources)" in (o.reason or "")
        )  # the 4 GPUs are taken: it waits, and says why
        assert third == Observation(
            Phase.PENDING, reason="Slurm: waiting for resources (Resources)"
        )
        assert not (tmp_path / "job2.gpus").exists()
        go.touch()
        for handle in handles:
            assert (await wait_for_end(slurm, handle)).phase is Phase.SUCCEEDED

    asyncio.run(scenario())


def test_sbatch_refusals_become_backend_errors(slurm: SlurmBackend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        with pytest.raises(BackendError, match="Invalid partition name"):
            await slurm.launch(make_spec(["true"], config={"partition": "nowhere"}))
        with pytest.raises(InvalidInputError, match="needs a command"):
            await slurm.launch(make_spec([]))
        with pytest.raises(InvalidInputError, match="not image"):
            await slurm.launch(make_spec(["true"], image="ubuntu:24.04"))
        with pytest.raises(InvalidInputError, match="run id"):
            await slurm.launch(make_spec(["true"], run_id="../escape"))

    asyncio.run(scenario())


def test_unknown_handles_are_lost_and_harmless(slurm: SlurmBackend) -> None:
    bogus = [
        Handle(backend="slurm", run_id="never-launched", attempt=1),
        Handle(backend="slurm", run_id="x", attempt=2, data={"job_id": "99999999", "name": "x"}),
        Handle(backend="slurm", run_id="../../etc", attempt=1, data={"job_id": "1"}),
    ]

    async def scenario() -> None:
        for handle in bogus:
            assert (await slurm.poll(handle)).phase is Phase.LOST
            await slurm.cancel(handle)
            assert (await slurm.read_logs(handle, 0)).text == ""
            await slurm.release(handle)

    asyncio.run(scenario())


def test_doctor_checks_a_working_cluster() -> None:
    require("Slurm", _slurm_ready(), HOW)
    checks = doctor_checks({})
    assert [(name, ok) for name, ok, _ in checks] == [
        ("slurm tools", True),
        ("slurm controller", True),
        ("slurm GPUs", True),
    ], checks
    assert "gpu:4" in checks[2][2]


# -- without Slurm ------------------------------------------------------------------------


def test_missing_tools_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="apt-get install slurm-client"):
        SlurmBackend.create(state_dir=tmp_path, lease_ttl_s=30, options={"bin_dir": str(tmp_path)})
    [(name, ok, detail)] = doctor_checks({"bin_dir": str(tmp_path)})
    assert (name, ok) == ("slurm tools", False)
    assert "SLURM_CONF" in detail
    with pytest.raises(InvalidInputError, match="unknown slurm backend option.*partition"):
        SlurmBackend.create(state_dir=tmp_path, lease_ttl_s=30, options={"partition": "gpu"})


def test_registered_as_the_slurm_resource() -> None:
    backend = get_backend_class("slurm")
    assert backend is SlurmBackend
    assert backend.assigns_gpus is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"image": "x"}, "'image'.*allowed keys: partition, .*extra"),
        ({"gres": "gpu=2"}, "gres 'gpu=2'"),
        ({"gres": "gpu:2", "gpus": 2}, "both `gres` and `gpus`"),
        ({"gpus": -1}, "gpus must be a whole number"),
        ({"cpus_per_task": 0}, "cpus_per_task"),
        ({"mem": "lots"}, "mem must be"),
        ({"time": "soon"}, "time must be"),
        ({"nodes": "a-b"}, "nodes must be"),
        ({"partition": "gpu\n#SBATCH --x"}, "partition must be"),
        ({"env": {"A B": "1"}}, "env name 'A B'"),
        ({"env": {"A": [1]}}, "env entry 'A'"),
        ({"extra": "--exclusive"}, "extra must be a list"),
        ({"extra": ["exclusive"]}, "extra option 'exclusive'"),
    ],
)
def test_check_config_refuses(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        SlurmBackend.check_config(config)


def test_check_config_accepts_templates_and_rendered_configs() -> None:
    template = {
        "partition": "gpu",
        "gres": "gpu:{{gpus}}",
        "cpus_per_task": "{{cpus}}",
        "mem": "{{mem}}",
        "time": "1-00:00:00",
        "nodes": 1,
        "env": {"HF_HOME": "/shared/hf", "DEBUG": False},
        "extra": ["--exclusive", "--gpu-bind=closest"],
        "working_dir": "/shared/${project_name}",
    }
    check_config(template)
    check_config({"gpus": "{{gpus}}", "account": "ml", "qos": "high", "constraint": "a100"})
    rendered = {"gres": "gpu:a100:2,shard:1", "cpus_per_task": 8, "mem": "64G", "nodes": "2"}
    check_config(rendered)
    assert gpu_demand(rendered) == 4  # 2 per node on 2 nodes
    assert gpu_demand({"gpus": 3}) == 3
    assert gpu_demand({"gres": "gpu:{{gpus}}"}) == 0  # unrendered: nothing to count yet
    assert gpu_demand({}) == 0
    assert sbatch_options({"partition": "gpu", "gpus": 2, "time": 60}) == [
        "--partition=gpu",
        "--time=60",
        "--gres=gpu:2",
    ]


@pytest.mark.parametrize(
    ("state", "reason", "status", "sig", "expected"),
    [
        ("COMPLETED", "None", 0, 0, Observation(Phase.SUCCEEDED, 0, "exit code 0")),
        ("FAILED", "NonZeroExitCode", 3, 0, Observation(Phase.FAILED, 3, "exit code 3")),
        (
            "FAILED",
            "JobLaunchFailure",
            0,
            9,
            Observation(Phase.FAILED, 137, "killed by signal SIGKILL (Slurm: JobLaunchFailure)"),
        ),
        ("CANCELLED", "None", 0, 15, Observation(Phase.CANCELLED, 143, "cancelled")),
        (
            "TIMEOUT",
            "TimeLimit",
            0,
            15,
            Observation(
                Phase.FAILED,
                143,
                "Slurm: time limit reached; raise `time` in the queue config (TIMEOUT)",
            ),
        ),
        (
            "OUT_OF_MEMORY",
            "OutOfMemory",
            0,
            125,
            Observation(
                Phase.FAILED,
                253,
                "Slurm: out of memory; raise `mem` in the queue config (OUT_OF_MEMORY)",
            ),
        ),
        (
            "NODE_FAIL",
            "NodeDown",
            0,
            0,
            Observation(
                Phase.PREEMPTED,
                0,
                "Slurm: a node failed; the run goes back to its queue (NODE_FAIL)",
            ),
        ),
        (
            "PREEMPTED",
            "None",
            0,
            0,
            Observation(
                Phase.PREEMPTED, 0, "Slurm: preempted; the run goes back to its queue (PREEMPTED)"
            ),
        ),
        ("RUNNING", "None", 0, 0, Observation(Phase.RUNNING)),
        ("COMPLETING", "None", 0, 0, Observation(Phase.RUNNING)),
        (
            "PENDING",
            "QOSMaxGRESPerUser",
            0,
            0,
            Observation(
                Phase.PENDING,
                reason="Slurm: the QOS limit on GPUs (GRES) per user is reached"
                " (QOSMaxGRESPerUser)",
            ),
        ),
        (
            "PENDING",
            "Priority",
            0,
            0,
            Observation(
                Phase.PENDING, reason="Slurm: waiting behind higher-priority jobs (Priority)"
            ),
        ),
        (
            "PENDING",
            "AssocGrpCPUMinutesLimit",
            0,
            0,
            Observation(
                Phase.PENDING,
                reason="Slurm: a limit of its account is reached (AssocGrpCPUMinutesLimit)",
            ),
        ),
    ],
)
def test_states_map_to_phases_and_reasons(
    state: str, reason: str, status: int, sig: int, expected: Observation
) -> None:
    assert observe(JobRecord("7", "launchyard-r-1", state, reason, status, sig)) == expected


def test_parsers_read_what_slurm_prints() -> None:
    squeue = "12|launchyard-abc-1|FAILED|NonZeroExitCode|768|\n13|other|RUNNING|None|0|\n"
    jobs = parse_squeue(squeue)
    assert jobs["12"] == JobRecord("12", "launchyard-abc-1", "FAILED", "NonZeroExitCode", 3, 0)
    assert jobs["13"].state == "RUNNING"
    scontrol = (
        "JobId=12 JobName=launchyard-abc-1 UserId=root(0) JobState=TIMEOUT Reason=TimeLimit "
        "Dependency=(null) ExitCode=0:15 Comment=launchyard run abc attempt 1 JobState=COMPLETED"
    )
    assert parse_key_values(scontrol) == JobRecord(
        "12", "launchyard-abc-1", "TIMEOUT", "TimeLimit", 0, 15
    )
    jobcomp = (
        "JobId=12 UserId=root(0) GroupId=root(0) Name=launchyard-abc-1 JobState=FAILED "
        "Partition=debug ExitCode=3:0 \n"
        "JobId=120 UserId=root(0) GroupId=root(0) Name=launchyard-abc-1 JobState=COMPLETED "
        "Partition=debug ExitCode=0:0 \n"
    )
    found = find_in_jobcomp(jobcomp, "12", "launchyard-abc-1")
    assert found is not None and observe(found) == Observation(Phase.FAILED, 3, "exit code 3")
    assert find_in_jobcomp(jobcomp, "12", "launchyard-other-1") is None
