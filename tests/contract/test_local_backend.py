"""The backend contract, run against real processes (no mocks).

Tests that take ``backend``/``make_backend`` run for every backend in
``conftest.BACKENDS``; those marked ``local_only`` check what only the local
backend promises (files, process groups, the lease file). Tests are plain
functions that drive the async API with ``asyncio.run``; waits poll every 0.05 s
up to a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import launchyard.backends
from launchyard.backends import get_backend_class
from launchyard.backends.base import Backend, Handle, LaunchSpec, Observation, Phase
from launchyard.backends.local import MAX_LOG_CHUNK, LocalBackend
from launchyard.errors import InvalidInputError

local_only = pytest.mark.parametrize("backend_name", ["local"])

MakeBackend = Callable[..., Backend]  # the fixtures in conftest.py
MakeSpec = Callable[..., LaunchSpec]

SRC_DIR = Path(launchyard.backends.__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------


async def wait_for_end(backend: Backend, handle: Handle, timeout: float = 10.0) -> Observation:
    deadline = time.monotonic() + timeout
    while True:
        observation = await backend.poll(handle)
        if observation.phase.is_terminal:
            return observation
        assert time.monotonic() < deadline, f"still {observation} after {timeout} s"
        await asyncio.sleep(0.05)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def read_all(backend: Backend, handle: Handle, offset: int = 0) -> str:
    parts: list[str] = []
    while True:
        chunk = await backend.read_logs(handle, offset)
        if chunk.next_offset == offset:
            return "".join(parts)
        parts.append(chunk.text)
        offset = chunk.next_offset


def running(pid: int) -> bool:
    """Whether a process runs (a zombie has ended: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def pids_in(path: Path, count: int) -> Callable[[], bool]:
    return lambda: path.exists() and len(path.read_text().split()) >= count


def read_pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


# -- the contract -------------------------------------------------------------------------


def test_failing_command_reports_exit_code_and_output(
    backend: Backend, make_spec: MakeSpec
) -> None:
    async def scenario() -> None:
        handle = await backend.launch(make_spec(["sh", "-c", "echo hello; exit 3"]))
        assert handle.backend == backend.name
        observation = await wait_for_end(backend, handle)
        assert observation == Observation(Phase.FAILED, exit_code=3, reason="exit code 3")
        assert await read_all(backend, handle) == "hello\n"

    asyncio.run(scenario())


def test_successful_command(backend: Backend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        handle = await backend.launch(make_spec(["sh", "-c", "echo done"]))
        observation = await wait_for_end(backend, handle)
        assert observation.phase is Phase.SUCCEEDED
        assert observation.exit_code == 0

    asyncio.run(scenario())


def test_launch_is_idempotent(backend: Backend, make_spec: MakeSpec, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    spec = make_spec(["sh", "-c", 'echo ran >> "$1"; sleep 0.2', "sh", str(ran)])

    async def scenario() -> None:
        first, second = await asyncio.gather(backend.launch(spec), backend.launch(spec))
        assert first == second
        assert await backend.launch(spec) == first
        assert (await wait_for_end(backend, first)).phase is Phase.SUCCEEDED
        assert await backend.launch(spec) == first  # after the end too: nothing starts again
        assert (await wait_for_end(backend, first)).phase is Phase.SUCCEEDED
        assert ran.read_text() == "ran\n"

    asyncio.run(scenario())


def test_environment_of_the_run(
    backend: Backend, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_AGENT", "agent")
    spec = make_spec(
        ["sh", "-c", 'for v in "$@"; do eval "echo $v=\\$$v"; done', "sh"]
        + ["FROM_AGENT", "FROM_QUEUE", "FLAG", "BOTH", "LAUNCHYARD_RUN_ID"]
        + ["CUDA_VISIBLE_DEVICES"],
        config={"env": {"FROM_QUEUE": 5, "FLAG": True, "BOTH": "queue"}},
        env={"BOTH": "run", "LAUNCHYARD_RUN_ID": "overridden"},
        gpu_ids=[1, 2],
        gpus=2,
    )

    async def scenario() -> None:
        handle = await backend.launch(spec)
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        lines = (await read_all(backend, handle)).splitlines()
        assert lines == [
            "FROM_AGENT=agent",
            "FROM_QUEUE=5",
            "FLAG=true",
            "BOTH=run",  # the run's env wins over the queue's
            f"LAUNCHYARD_RUN_ID={spec.run_id}",
            "CUDA_VISIBLE_DEVICES=1,2",
        ]

    asyncio.run(scenario())


def test_no_gpus_hides_every_device(
    backend: Backend, make_spec: MakeSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    spec = make_spec(["sh", "-c", 'echo "${CUDA_VISIBLE_DEVICES+set}[$CUDA_VISIBLE_DEVICES]"'])

    async def scenario() -> None:
        handle = await backend.launch(spec)
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert await read_all(backend, handle) == "set[]\n"

    asyncio.run(scenario())


def test_config_file_holds_the_run_config(backend: Backend, make_spec: MakeSpec) -> None:
    run_config = {"lr": 0.001, "name": "résumé ✓", "layers": [1, 2, {"x": None}]}
    run_config["big"] = "x" * 300_000  # no size limit
    spec = make_spec(["sh", "-c", 'cat "$LAUNCHYARD_CONFIG_FILE"'], run_config=run_config)

    async def scenario() -> None:
        handle = await backend.launch(spec)
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert json.loads(await read_all(backend, handle)) == run_config

    asyncio.run(scenario())


def test_cache_dir(backend: Backend, make_spec: MakeSpec, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "deep"
    names = ["XDG_CACHE_HOME", "HF_HOME", "PIP_CACHE_DIR", "LAUNCHYARD_CACHE_DIR"]
    spec = make_spec(
        ["sh", "-c", 'for v in "$@"; do eval "echo \\$$v"; done', "sh", *names],
        config={"cache_dir": str(cache)},
    )

    async def scenario() -> None:
        handle = await backend.launch(spec)
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert (await read_all(backend, handle)).splitlines() == [
            str(cache),
            str(cache / "huggingface"),
            str(cache / "pip"),
            str(cache),
        ]
        assert cache.is_dir()
        if isinstance(backend, LocalBackend):  # the run's environment may hold secrets
            assert (Path(handle.data["dir"]) / "env.json").stat().st_mode & 0o077 == 0

    asyncio.run(scenario())


def test_cancel_stops_the_whole_process_group(
    backend: Backend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    # `sleep 100 & sleep 100`, with both pids written down (exec keeps the shell's pid).
    script = 'sleep 100 & echo $! >> "$1"; echo $$ >> "$1"; exec sleep 100'
    spec = make_spec(["sh", "-c", script, "sh", str(pid_file)])

    async def scenario() -> None:
        handle = await backend.launch(spec)
        await wait_until(pids_in(pid_file, 2), "both sleeps")
        assert (await backend.poll(handle)).phase is Phase.RUNNING
        await backend.cancel(handle, grace_s=5)
        observation = await wait_for_end(backend, handle, timeout=5)
        assert observation.phase is Phase.CANCELLED
        assert observation.reason == "cancelled"
        assert not any(running(pid) for pid in read_pids(pid_file))
        await backend.cancel(handle)  # silent once ended
        assert (await backend.poll(handle)).phase is Phase.CANCELLED

    asyncio.run(scenario())


def test_cancel_right_after_launch(backend: Backend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        handle = await backend.launch(make_spec(["sleep", "100"]))
        await backend.cancel(handle, grace_s=5)
        assert (await wait_for_end(backend, handle, timeout=5)).phase is Phase.CANCELLED

    asyncio.run(scenario())


def test_cancel_kills_what_ignores_sigterm_after_the_grace(
    backend: Backend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    script = 'trap "" TERM; touch "$1"; while :; do sleep 0.05; done'
    spec = make_spec(["sh", "-c", script, "sh", str(ready)])

    async def scenario() -> None:
        handle = await backend.launch(spec)
        await wait_until(ready.exists, "the trap")
        started = time.monotonic()
        await backend.cancel(handle, grace_s=0.3)
        assert (await wait_for_end(backend, handle, timeout=5)).phase is Phase.CANCELLED
        assert time.monotonic() - started >= 0.3

    asyncio.run(scenario())


def test_cancel_sends_sigterm_first(backend: Backend, make_spec: MakeSpec, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = 'trap "echo got TERM; exit 0" TERM; touch "$1"; while :; do sleep 0.05; done'
    spec = make_spec(["sh", "-c", script, "sh", str(ready)])

    async def scenario() -> None:
        handle = await backend.launch(spec)
        await wait_until(ready.exists, "the trap")
        await backend.cancel(handle, grace_s=5)
        assert (await wait_for_end(backend, handle, timeout=5)).phase is Phase.CANCELLED
        assert "got TERM" in await read_all(backend, handle)

    asyncio.run(scenario())


def test_background_child_left_by_a_finished_command_is_killed(
    backend: Backend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    spec = make_spec(["sh", "-c", 'sleep 100 & echo $! > "$1"; exit 0', "sh", str(pid_file)])

    async def scenario() -> None:
        handle = await backend.launch(spec)
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        [pid] = read_pids(pid_file)
        assert not running(pid)

    asyncio.run(scenario())


def test_unknown_handles_are_lost_and_harmless(backend: Backend) -> None:
    bogus = [
        Handle(backend=backend.name, run_id="never-launched", attempt=1),
        Handle(backend=backend.name, run_id="x", attempt=2, data={"pid": 1, "start_time": 0}),
        Handle(backend=backend.name, run_id="../../etc", attempt=1, data={"dir": "/"}),
    ]

    async def scenario() -> None:
        for handle in bogus:
            assert (await backend.poll(handle)).phase is Phase.LOST
            await backend.cancel(handle)
            await backend.keepalive(handle)
            assert (await backend.read_logs(handle, 0)).text == ""
            await backend.release(handle)

    asyncio.run(scenario())


def test_logs_never_split_a_character(
    backend: Backend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    # "é" is b"\xc3\xa9": the first byte is written, then the second once "go" exists.
    script = 'printf "h\\303"; while [ ! -e "$1" ]; do sleep 0.02; done; printf "\\251llo\\n"'
    spec = make_spec(["sh", "-c", script, "sh", str(go)])

    async def scenario() -> None:
        handle = await backend.launch(spec)

        async def some_output() -> bool:
            return (await backend.read_logs(handle, 0)).text != ""

        await wait_until(some_output, "the first byte")
        first = await backend.read_logs(handle, 0)
        assert first.text == "h"
        assert (await backend.read_logs(handle, first.next_offset)).text == ""
        go.touch()
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert await read_all(backend, handle, first.next_offset) == "éllo\n"

    asyncio.run(scenario())


def test_long_logs_come_in_chunks(backend: Backend, make_spec: MakeSpec) -> None:
    # A 3-byte character straddles the 1 MiB chunk boundary of the local backend.
    expected = "a" * (MAX_LOG_CHUNK - 1) + "€ then more\n" + "b" * 1000
    code = (
        f"import sys; sys.stdout.write('a' * {MAX_LOG_CHUNK - 1} + '€ then more\\n' + 'b' * 1000)"
    )
    spec = make_spec([sys.executable, "-c", code])

    async def scenario() -> None:
        handle = await backend.launch(spec)
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert await read_all(backend, handle) == expected

    asyncio.run(scenario())


def test_invalid_bytes_are_replaced(backend: Backend, make_spec: MakeSpec) -> None:
    spec = make_spec(["sh", "-c", 'printf "\\377ok\\n\\342\\202"'])  # ends in a broken "€"

    async def scenario() -> None:
        handle = await backend.launch(spec)
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert await read_all(backend, handle) == "\ufffdok\n\ufffd"

    asyncio.run(scenario())


def test_an_end_outlives_the_backend_object(make_backend: MakeBackend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        first = make_backend()
        handle = await first.launch(make_spec(["sh", "-c", "sleep 0.2; exit 7"]))
        del first
        observation = await wait_for_end(make_backend(), handle)
        assert observation == Observation(Phase.FAILED, exit_code=7, reason="exit code 7")

    asyncio.run(scenario())


# -- what only the local backend promises ---------------------------------------------------


@local_only
def test_a_new_backend_adopts_live_runs(make_backend: MakeBackend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        first = make_backend()
        handle = await first.launch(make_spec(["sleep", "100"]))
        ended = await first.launch(make_spec(["true"]))
        await wait_for_end(first, ended)
        del first

        second = make_backend()
        assert isinstance(second, LocalBackend)
        assert await second.live_handles() == [handle]
        assert (await second.poll(handle)).phase is Phase.RUNNING
        await second.cancel(handle, grace_s=5)
        assert (await wait_for_end(second, handle)).phase is Phase.CANCELLED
        assert await second.live_handles() == []

    asyncio.run(scenario())


AGENT = """
import asyncio, json, sys, time
from pathlib import Path
from launchyard.backends.base import LaunchSpec
from launchyard.backends.local import LocalBackend

async def main() -> None:
    backend = LocalBackend(Path(sys.argv[1]))
    spec = LaunchSpec(sys.argv[2], 1, "acme", "vision", "default", ["sleep", "100"], {})
    print(json.dumps((await backend.launch(spec)).to_json()), flush=True)
    time.sleep(100)

asyncio.run(main())
"""


@local_only
def test_runs_survive_a_sigkilled_agent(make_backend: MakeBackend) -> None:
    backend = make_backend()
    assert isinstance(backend, LocalBackend)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC_DIR), *sys.path])}
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(backend.state_dir), "orphaned"],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert agent.stdout is not None
        handle = Handle.from_json(json.loads(agent.stdout.readline()))
    finally:
        agent.kill()
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()

    async def scenario() -> None:
        assert await backend.live_handles() == [handle]
        assert (await backend.poll(handle)).phase is Phase.RUNNING
        await backend.cancel(handle, grace_s=5)
        assert (await wait_for_end(backend, handle)).phase is Phase.CANCELLED

    asyncio.run(scenario())


@local_only
def test_lease_lost_without_keepalive(make_backend: MakeBackend, make_spec: MakeSpec) -> None:
    backend = make_backend(lease_ttl_s=1.0)

    async def scenario() -> None:
        started = time.monotonic()
        handle = await backend.launch(make_spec(["sleep", "100"]))
        observation = await wait_for_end(backend, handle, timeout=5)
        assert observation.phase is Phase.FAILED
        assert observation.reason == "lease lost: the agent stopped renewing it"
        assert time.monotonic() - started < 2.0  # dead before the server's lease (1 s) is reused

    asyncio.run(scenario())


@local_only
def test_keepalive_keeps_the_run(make_backend: MakeBackend, make_spec: MakeSpec) -> None:
    backend = make_backend(lease_ttl_s=1.0)

    async def scenario() -> None:
        handle = await backend.launch(make_spec(["sleep", "100"]))
        until = time.monotonic() + 1.6
        while time.monotonic() < until:
            await backend.keepalive(handle)
            assert (await backend.poll(handle)).phase is Phase.RUNNING
            await asyncio.sleep(0.2)
        await backend.cancel(handle, grace_s=0)
        assert (await wait_for_end(backend, handle)).phase is Phase.CANCELLED

    asyncio.run(scenario())


@local_only
def test_a_vanished_supervisor_is_lost_and_takes_its_run_along(
    backend: Backend, make_spec: MakeSpec, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    spec = make_spec(["sh", "-c", 'echo $$ > "$1"; exec sleep 100', "sh", str(pid_file)])

    async def scenario() -> None:
        handle = await backend.launch(spec)
        await wait_until(pids_in(pid_file, 1), "the command")
        os.kill(handle.data["pid"], signal.SIGKILL)
        observation = await wait_for_end(backend, handle)
        assert observation == Observation(
            Phase.LOST, reason="the local supervisor process vanished"
        )
        [pid] = read_pids(pid_file)
        await wait_until(lambda: not running(pid), "the orphaned command to die")

    asyncio.run(scenario())


@local_only
def test_signal_deaths(backend: Backend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        handle = await backend.launch(make_spec(["sh", "-c", "kill -KILL $$"]))
        observation = await wait_for_end(backend, handle)
        assert observation == Observation(
            Phase.FAILED,
            exit_code=137,
            reason="killed by signal SIGKILL (out of memory or killed from outside)",
        )
        handle = await backend.launch(make_spec(["sh", "-c", "kill -SEGV $$"]))
        observation = await wait_for_end(backend, handle)
        assert observation == Observation(
            Phase.FAILED, exit_code=139, reason="killed by signal SIGSEGV"
        )

    asyncio.run(scenario())


@local_only
def test_command_not_found(backend: Backend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        handle = await backend.launch(make_spec(["/nonexistent/launchyard-test-binary"]))
        observation = await wait_for_end(backend, handle)
        assert observation.phase is Phase.FAILED
        assert observation.exit_code == 127
        assert "could not start the command" in (observation.reason or "")
        assert "launchyard-test-binary" in await read_all(backend, handle)

    asyncio.run(scenario())


@local_only
def test_working_dir(backend: Backend, make_spec: MakeSpec, tmp_path: Path) -> None:
    async def scenario() -> None:
        handle = await backend.launch(make_spec(["pwd"], config={"working_dir": str(tmp_path)}))
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert await read_all(backend, handle) == f"{tmp_path.resolve()}\n"

        handle = await backend.launch(make_spec(["pwd"]))
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        assert await read_all(backend, handle) == f"{handle.data['dir']}/work\n"

        missing = make_spec(["pwd"], config={"working_dir": str(tmp_path / "missing")})
        with pytest.raises(InvalidInputError, match="working_dir"):
            await backend.launch(missing)

    asyncio.run(scenario())


@local_only
def test_launch_refuses_bad_specs(backend: Backend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidInputError, match="a local run needs a command"):
            await backend.launch(make_spec([]))
        with pytest.raises(InvalidInputError, match="run id"):
            await backend.launch(make_spec(["true"], run_id="../escape"))
        with pytest.raises(InvalidInputError, match="image"):
            await backend.launch(make_spec(["true"], config={"image": "ubuntu"}))

    asyncio.run(scenario())


@local_only
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"image": "x"}, "'image'.*allowed keys: gpus, env, working_dir, cache_dir"),
        ({"gpus": -1}, "gpus"),
        ({"gpus": "2"}, "gpus"),
        ({"gpus": True}, "gpus"),
        ({"env": ["A=1"]}, "env"),
        ({"env": {"A": {"nested": 1}}}, "env entry 'A'"),
        ({"env": {"A": None}}, "env entry 'A'"),
        ({"working_dir": 3}, "working_dir"),
        ({"cache_dir": ["x"]}, "cache_dir"),
    ],
)
def test_validate_config_refuses(backend: Backend, config: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        backend.validate_config(config)


@local_only
def test_validate_config_accepts(backend: Backend) -> None:
    backend.validate_config({})
    backend.validate_config(
        {"gpus": 2, "env": {"A": "1", "B": 2, "C": 1.5, "D": False}, "working_dir": "/tmp"}
        | {"cache_dir": "~/.cache/launchyard"}
    )


@local_only
def test_release_removes_the_folder(backend: Backend, make_spec: MakeSpec) -> None:
    async def scenario() -> None:
        handle = await backend.launch(make_spec(["true"]))
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        await backend.release(handle)
        assert not Path(handle.data["dir"]).exists()
        assert (await backend.poll(handle)).phase is Phase.LOST

    asyncio.run(scenario())


@local_only
def test_a_log_split_at_the_chunk_size(backend: Backend, make_spec: MakeSpec) -> None:
    code = f"import sys; sys.stdout.buffer.write(b'a' * {MAX_LOG_CHUNK - 1} + '€'.encode())"

    async def scenario() -> None:
        handle = await backend.launch(make_spec([sys.executable, "-c", code]))
        assert (await wait_for_end(backend, handle)).phase is Phase.SUCCEEDED
        first = await backend.read_logs(handle, 0)
        assert first.next_offset == MAX_LOG_CHUNK - 1  # the "€" waits for the next call
        assert first.text == "a" * (MAX_LOG_CHUNK - 1)
        rest = await backend.read_logs(handle, first.next_offset)
        assert (rest.text, rest.next_offset) == ("€", MAX_LOG_CHUNK + 2)

    asyncio.run(scenario())


def test_class_methods_for_the_server_and_agent(tmp_path: Path) -> None:
    assert LocalBackend.assigns_gpus
    LocalBackend.check_config({"gpus": "{{gpus}}", "env": {"A": "{{a}}"}})  # a template
    assert LocalBackend.gpu_demand({"gpus": 3}) == 3
    assert LocalBackend.gpu_demand({}) == 0
    backend = LocalBackend.create(
        state_dir=tmp_path, lease_ttl_s=5.0, options={"python": sys.executable}
    )
    assert isinstance(backend, LocalBackend)
    assert (backend.state_dir, backend.lease_ttl_s) == (tmp_path.resolve(), 5.0)
    with pytest.raises(InvalidInputError, match="no option 'docker_host'"):
        LocalBackend.create(state_dir=tmp_path, lease_ttl_s=5.0, options={"docker_host": "x"})


def test_get_backend_class() -> None:
    assert get_backend_class("local") is LocalBackend
    with pytest.raises(InvalidInputError, match="known resources: .*local"):
        get_backend_class("mainframe")


def test_the_agents_own_launchyard_settings_do_not_reach_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's API key is its own: a run sees only what its spec gives it."""
    from launchyard.backends.base import LaunchSpec
    from launchyard.backends.local import LocalBackend

    monkeypatch.setenv("LAUNCHYARD_API_KEY", "ly_agent-secret")
    out = tmp_path / "env.txt"
    backend = LocalBackend(tmp_path / "state")
    spec = LaunchSpec(
        run_id="envleak",
        attempt=1,
        entity="e",
        project="p",
        queue="q",
        command=["sh", "-c", f"env > {out}"],
        config={},
        env={"LAUNCHYARD_HOST": "http://server"},
    )

    async def go() -> None:
        handle = await backend.launch(spec)
        for _ in range(200):
            if (await backend.poll(handle)).phase.is_terminal:
                return
            await asyncio.sleep(0.05)

    asyncio.run(go())
    text = out.read_text()
    assert "ly_agent-secret" not in text
    assert "LAUNCHYARD_HOST=http://server" in text and "LAUNCHYARD_RUN_ID=envleak" in text


@local_only
def test_the_backend_says_at_once_when_an_attempt_ends(
    make_backend: MakeBackend, make_spec: MakeSpec
) -> None:
    """``on_change`` is called (from a thread) when the supervisor exits, after exit.json."""
    backend = make_backend()
    woken: list[str] = []
    observed: list[Phase] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def wake(run_id: str) -> None:  # as the agent does: hop onto the event loop
            loop.call_soon_threadsafe(woken.append, run_id)

        backend.on_change(wake)
        spec = make_spec(["sh", "-c", "exit 4"])
        handle = await backend.launch(spec)
        await wait_until(lambda: bool(woken), "the wake-up", timeout=5)
        observed.append((await backend.poll(handle)).phase)  # already known: no later tick
        assert woken == [spec.run_id]

    asyncio.run(scenario())
    assert observed == [Phase.FAILED]


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # state, ppid, pgrp, session, ...


@local_only
def test_supervisors_are_forked_by_a_helper_that_comes_back(
    make_backend: MakeBackend, make_spec: MakeSpec
) -> None:
    """Forked, not exec'd, yet each in its own session; runs outlive a killed helper."""
    backend = make_backend()
    assert isinstance(backend, LocalBackend)

    async def scenario() -> None:
        handle = await backend.launch(make_spec(["sleep", "100"]))
        supervisor = int(handle.data["pid"])
        helper = backend._spawner._proc
        assert helper is not None
        state, ppid, _, session = _stat(supervisor)[:4]
        assert int(ppid) == helper.pid and int(session) == supervisor

        os.kill(helper.pid, signal.SIGKILL)
        helper.wait()
        assert (await backend.poll(handle)).phase is Phase.RUNNING  # the run goes on

        again = await backend.launch(make_spec(["sh", "-c", "exit 5"]))
        assert backend._spawner._proc is not None and backend._spawner._proc.pid != helper.pid
        assert (await wait_for_end(backend, again)).exit_code == 5

        await backend.cancel(handle, grace_s=1)
        assert (await wait_for_end(backend, handle)).phase is Phase.CANCELLED

    asyncio.run(scenario())


@local_only
def test_without_the_helper_supervisors_are_spawned_as_before(
    make_backend: MakeBackend, make_spec: MakeSpec
) -> None:
    backend = make_backend()
    assert isinstance(backend, LocalBackend)
    (backend.state_dir / "supervisor-helper.log").mkdir(parents=True)  # the helper cannot start

    async def scenario() -> None:
        handle = await backend.launch(make_spec(["sh", "-c", "sleep 0.2; exit 6"]))
        assert backend._spawner._proc is None
        assert int(_stat(int(handle.data["pid"]))[1]) == os.getpid()  # our own child
        assert (await wait_for_end(backend, handle)).exit_code == 6

    asyncio.run(scenario())
