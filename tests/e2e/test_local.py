"""The whole story on one machine: real server and agent processes, driven through the CLI."""

from __future__ import annotations

import json
import os
import signal
import sys
from itertools import combinations
from pathlib import Path

from tests.e2e.conftest import GPU_QUEUE, LiveServer, wait_until, write

# A run that records when it started and ended, on which GPUs, in which attempt.
RECORDER = (
    "import json, os, sys, time; "
    "rec = dict(run=os.environ['LAUNCHYARD_RUN_ID'], pid=os.getpid(), "
    "gpus=os.environ['CUDA_VISIBLE_DEVICES'], start=time.time()); "
    "time.sleep(float(sys.argv[1])); rec['end'] = time.time(); "
    "open(sys.argv[2], 'a').write(json.dumps(rec) + '\\n'); print('done', rec['run'])"
)


def records(path: Path) -> list[dict]:  # type: ignore[type-arg]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def max_concurrent(recs: list[dict]) -> int:  # type: ignore[type-arg]
    events = sorted([(r["start"], 1) for r in recs] + [(r["end"], -1) for r in recs])
    running = peak = 0
    for _, delta in events:  # an end sorts before a start at the same instant
        running += delta
        peak = max(peak, running)
    return peak


def launch(server: LiveServer, *args: str) -> str:
    out = server.cli("launch", "-q", "gpu", *args).stdout
    return out.strip().splitlines()[-1]


def states(server: LiveServer, ids: list[str]) -> list[str]:
    c = server.client()
    return [c.get_run(i)["state"] for i in ids]


def test_gpu_runs_never_share_a_device(live_server: LiveServer, tmp_path: Path) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    out = tmp_path / "runs.jsonl"
    ids = [
        launch(
            live_server, "--set", "gpus=2", "--", sys.executable, "-c", RECORDER, "2.5", str(out)
        )
        for _ in range(8)
    ]
    # All eight wait in the queue first, so the agent's scheduling alone decides.
    live_server.start_agent("-q", "gpu", "-e", "default", "-j", "8", "--gpus", "0,1,2,3")
    wait_until(lambda: all(s == "finished" for s in states(live_server, ids)), 60)
    recs = records(out)
    assert sorted(r["run"] for r in recs) == sorted(ids)
    for a, b in combinations(recs, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:  # ran at the same time
            assert not set(a["gpus"].split(",")) & set(b["gpus"].split(",")), (a, b)
    assert all(len(r["gpus"].split(",")) == 2 for r in recs)
    assert max_concurrent(recs) == 2  # 4 GPUs / 2 each, and the agent did use both pairs
    shown = json.loads(live_server.cli("runs", "show", ids[0], "--json").stdout)
    # A local launch is quick: `claimed` goes straight to `running` (no `starting` report).
    assert [t["state"] for t in shown["transitions"]] == [
        "queued",
        "claimed",
        "running",
        "finished",
    ]
    assert shown["exit_code"] == 0 and len(shown["gpu_ids"]) == 2
    assert "done " + ids[0] in live_server.cli("logs", ids[0]).stdout


def test_follow_streams_logs_and_exits_with_the_run_code(
    live_server: LiveServer, tmp_path: Path
) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    live_server.start_agent("-q", "gpu", "-j", "2", "--gpus", "0,1")
    config = write(tmp_path / "run.yaml", "lr: 0.5\nlayers: [1, 2]\n")
    result = live_server.cli(
        "launch",
        "-q",
        "gpu",
        "--set",
        "gpus=1",
        "-c",
        str(config),
        "--follow",
        "--",
        sys.executable,
        "-c",
        "import launchyard, os; print('config', launchyard.run_config()); "
        "print('env', os.environ['QUEUE_NAME']); raise SystemExit(3)",
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "config {'lr': 0.5, 'layers': [1, 2]}" in result.stdout
    assert "env gpu" in result.stdout
    run_id = result.stdout.strip().splitlines()[-1]
    run = live_server.client().get_run(run_id)
    assert run["state"] == "failed" and run["reason"] == "exit code 3"


def test_cancel_kills_the_whole_process_group(live_server: LiveServer, tmp_path: Path) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    live_server.start_agent("-q", "gpu", "-j", "2", "--gpus", "0,1")
    pids = tmp_path / "pids"
    run_id = launch(
        live_server,
        "--set",
        "gpus=0",
        "--",
        "sh",
        "-c",
        f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait",
    )
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 30)
    live_server.cli("cancel", run_id)
    wait_until(lambda: states(live_server, [run_id]) == ["cancelled"], 30)
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: not _alive(pid), 10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _no_run_twice_at_once(recs: list[dict]) -> None:  # type: ignore[type-arg]
    for a, b in combinations(recs, 2):
        if a["run"] == b["run"]:
            assert not (a["start"] < b["end"] and b["start"] < a["end"]), (a, b)


def test_sigkilled_agent_is_adopted_by_its_restart(live_server: LiveServer, tmp_path: Path) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    agent = live_server.start_agent("-q", "gpu", "-j", "4", "--gpus", "0,1,2,3")
    out = tmp_path / "runs.jsonl"
    ids = [
        launch(live_server, "--set", "gpus=1", "--", sys.executable, "-c", RECORDER, "4", str(out))
        for _ in range(4)
    ]
    wait_until(lambda: all(s == "running" for s in states(live_server, ids)), 30)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    live_server.start_agent("-q", "gpu", "-j", "4", "--gpus", "0,1,2,3", log_name="restart.log")
    wait_until(lambda: all(s == "finished" for s in states(live_server, ids)), 60)
    recs = records(out)
    assert sorted(r["run"] for r in recs) == sorted(ids)  # each ran exactly once: adopted
    c = live_server.client()
    assert all(c.get_run(i)["attempt"] == 1 for i in ids)
    _no_run_twice_at_once(recs)


def test_sigkilled_agent_runs_are_requeued_when_the_lease_expires(
    live_server: LiveServer, tmp_path: Path
) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    agent = live_server.start_agent("-q", "gpu", "-j", "2", "--gpus", "0,1", name="doomed")
    out = tmp_path / "runs.jsonl"
    # Long enough that the dead-man's switch kills the first copies before they end.
    ids = [
        launch(live_server, "--set", "gpus=1", "--", sys.executable, "-c", RECORDER, "6", str(out))
        for _ in range(2)
    ]
    wait_until(lambda: all(s == "running" for s in states(live_server, ids)), 30)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    # Another machine's agent takes over once the leases expire.
    live_server.start_agent("-q", "gpu", "-j", "2", "--gpus", "0,1", name="survivor")
    wait_until(lambda: all(s == "finished" for s in states(live_server, ids)), 60)
    c = live_server.client()
    for run_id in ids:
        run = c.get_run(run_id)
        assert run["attempt"] == 2 and run["agent"] == "survivor"
        assert any("stopped renewing its lease" in (t["reason"] or "") for t in run["transitions"])
    recs = records(out)
    assert sorted(r["run"] for r in recs) == sorted(ids)  # the first copies were killed
    _no_run_twice_at_once(recs)


def test_drained_agent_finishes_its_runs_and_exits(live_server: LiveServer, tmp_path: Path) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    agent = live_server.start_agent("-q", "gpu", "-j", "1", "--gpus", "0")
    first = launch(live_server, "--set", "gpus=1", "--", "sleep", "6")
    wait_until(lambda: states(live_server, [first]) == ["running"], 30)
    second = launch(live_server, "--set", "gpus=1", "--", "true")
    agents = json.loads(live_server.cli("agents", "list", "--json").stdout)
    live_server.cli("agents", "drain", str(agents[0]["id"]))
    agent.wait(timeout=30)
    assert states(live_server, [first, second]) == ["finished", "queued"]
    waiting = live_server.client().get_run(second)
    assert waiting["waiting_reason"].startswith("no agent for this queue")


def test_login_and_an_agent_config_file(live_server: LiveServer, tmp_path: Path) -> None:
    env_free = {"key": ""}  # no LAUNCHYARD_API_KEY: the stored credentials must be used
    live_server.cli("login", "--host", live_server.host, "--key", live_server.key)
    stored = tmp_path / "cli-config" / "credentials.json"
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)), **env_free)
    agent_file = write(
        tmp_path / "agent.yaml", "queues: [gpu]\nentity: default\nmax_jobs: 2\ngpus: '0,1'\n"
    )
    live_server.start_agent("-c", str(agent_file), name="from-file")
    live_server.wait_agent_ready("from-file")
    agents = json.loads(live_server.cli("agents", "list", "--json").stdout)
    assert agents[0]["gpu_ids"] == [0, 1] and agents[0]["max_jobs"] == 2
    run_id = launch(live_server, "--set", "gpus=2", "--", "true")
    wait_until(lambda: states(live_server, [run_id]) == ["finished"], 30)


def test_outputs_saved_by_the_run_are_kept(live_server: LiveServer, tmp_path: Path) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    live_server.start_agent("-q", "gpu", "-j", "1", "--gpus", "0")
    script = (
        "import json, os, launchyard; "
        "open('sample.png', 'wb').write(b'\\x89PNG fake'); "
        "print(launchyard.save('sample.png', 'images/sample.png')); "
        "d = os.environ['LAUNCHYARD_OUTPUT_DIR']; "
        "json.dump({'loss': 0.25}, open(os.path.join(d, 'metrics.json'), 'w'))"
    )
    run_id = launch(live_server, "--set", "gpus=0", "--", sys.executable, "-c", script)
    wait_until(lambda: states(live_server, [run_id]) == ["finished"], 30)
    c = live_server.client()
    files = {f["path"]: f["size"] for f in c.list_files(run_id)}
    assert files == {"images/sample.png": 9, "metrics.json": 14}
    assert c.download(run_id, "images/sample.png") == b"\x89PNG fake"
    assert json.loads(c.download(run_id, "metrics.json")) == {"loss": 0.25}


SECRET_QUEUE = """\
name: secret
resource: local
config:
  gpus: 0
  env:
    HF_TOKEN: {secret: hf_live_token_123}
"""


def test_secrets_reach_the_run_but_never_listings_or_logs(
    live_server: LiveServer, tmp_path: Path
) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "s.yaml", SECRET_QUEUE)))
    live_server.start_agent("-q", "secret", "-j", "1", "--gpus", "none")
    seen = tmp_path / "seen.txt"
    run_id = (
        live_server.cli(
            "launch",
            "-q",
            "secret",
            "--",
            "sh",
            "-c",
            f'printf %s "$HF_TOKEN" > {seen}; echo "token is $HF_TOKEN"',
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    wait_until(lambda: states(live_server, [run_id]) == ["finished"], 30)
    assert seen.read_text() == "hf_live_token_123"  # the run got the real value
    shown = [
        live_server.cli("queue", "show", "secret").stdout,
        live_server.cli("queue", "show", "secret", "--json").stdout,
        live_server.cli("runs", "show", run_id, "--json").stdout,
        live_server.cli("logs", run_id).stdout,
    ]
    assert all("hf_live_token_123" not in text for text in shown)
    assert "token is ***" in shown[3]


def test_a_run_past_its_time_limit_is_stopped_by_its_agent(
    live_server: LiveServer, tmp_path: Path
) -> None:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", GPU_QUEUE)))
    live_server.start_agent("-q", "gpu", "-j", "1", "--gpus", "0")
    run_id = launch(live_server, "--set", "gpus=0", "--time-limit", "1", "--", "sleep", "30")
    wait_until(lambda: states(live_server, [run_id]) == ["failed"], 15)
    run = live_server.client().get_run(run_id)
    assert run["reason"] == "stopped at its time limit of 1 s"
    assert run["transitions"][-1]["phase"] == "agent"
