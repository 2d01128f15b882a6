"""Faults injected for real: a SIGKILLed server under load, a database that goes away."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from tests.conftest import require
from tests.e2e.conftest import LiveServer, free_port, wait_until

from launchyard.errors import LaunchyardError, ServerUnavailableError
from reliability.conftest import REPORT

QUEUE = {"name": "q", "config": "gpus: 0\n"}


def _submitters(
    server: LiveServer, n: int, stop: threading.Event, acked: list[str], errors: list[str]
) -> list[threading.Thread]:
    def loop() -> None:
        c = server.client()
        while not stop.is_set():
            key = uuid.uuid4().hex
            try:
                run = c.submit(
                    "default", {"queue": "q", "command": ["true"], "idempotency_key": key}
                )
                acked.append(run["id"])
            except (ServerUnavailableError, LaunchyardError, httpx.HTTPError) as exc:
                errors.append(type(exc).__name__)
                time.sleep(0.05)

    return [threading.Thread(target=loop, daemon=True) for _ in range(n)]


def test_acknowledged_submissions_survive_a_sigkilled_server(
    tmp_path: Path, database_url: str
) -> None:
    server = LiveServer(tmp_path, database_url=database_url)  # SQLite and PostgreSQL
    server.start()
    try:
        server.client().create_queue("default", QUEUE)
        server.start_agent("-q", "q", "-j", "4", "--gpus", "none")
        stop, acked, errors = threading.Event(), [], []  # type: ignore[var-annotated]
        threads = _submitters(server, 4, stop, acked, errors)
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 40, 30)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)  # mid-stream, with requests in flight
        server.proc.wait()
        acked_before_kill = len(acked)
        time.sleep(1.0)  # clients and the agent see the outage
        server.start()
        wait_until(lambda: len(acked) >= acked_before_kill + 20, 30)
        stop.set()
        for t in threads:
            t.join(10)
        c = server.client()
        missing = [run_id for run_id in acked if not _exists(c, run_id)]
        REPORT["faults: servers SIGKILLed under load"] += 1
        REPORT["faults: acknowledged submissions"] += len(acked)
        REPORT["faults: acknowledged submissions lost"] += len(missing)
        assert missing == []
        # The agent rode out the outage: everything acknowledged runs to the end.
        wait_until(lambda: all(c.get_run(i)["state"] == "finished" for i in acked[-5:]), 60)
    finally:
        server.stop()


def _exists(c, run_id: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        c.get_run(run_id)
        return True
    except LaunchyardError:
        return False


class PrivatePostgres:
    """A PostgreSQL of this test's own, so it can be stopped and started."""

    def __init__(self) -> None:
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        require("PostgreSQL server binaries", bool(bindirs), "apt-get install postgresql")
        self.bin = bindirs[-1]
        # The postgres user must reach it: pytest's own tmp folders are root-only.
        self.root = Path(tempfile.mkdtemp(prefix="ly-pg-"))
        self.root.chmod(0o755)
        shutil.chown(self.root, "postgres")
        self.port = free_port()
        root = self.root
        self._as_postgres(f"{self.bin}/initdb -D {root}/data -A trust -U postgres")

    def _as_postgres(self, command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "sh", "-c", command],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self._as_postgres(
            f"{self.bin}/pg_ctl -D {self.root}/data -l {self.root}/log -w start "
            f"-o '-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off'"
        )

    def stop(self) -> None:
        self._as_postgres(f"{self.bin}/pg_ctl -D {self.root}/data -m fast -w stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


def test_database_outage_answers_503_and_recovers(tmp_path: Path) -> None:
    require("root (to run a private PostgreSQL)", os.geteuid() == 0, "run the tests as root")
    pg = PrivatePostgres()
    pg.start()
    server = LiveServer(tmp_path, database_url=pg.url)
    try:
        server.start()
        c = server.client()
        c.create_queue("default", QUEUE)
        pg.stop()
        answers = []
        for _ in range(5):
            response = httpx.get(
                f"{server.host}/api/v1/entities/default/queues",
                headers={"Authorization": f"Bearer {server.key}"},
                timeout=30,
            )
            answers.append(response.status_code)
        REPORT["faults: database outages"] += 1
        REPORT["faults: 5xx other than 503 during outage"] += sum(
            1 for s in answers if s >= 500 and s != 503
        )
        assert set(answers) == {503}, answers
        body = response.json()["error"]
        assert body["code"] == "unavailable" and "database is unavailable" in body["message"]
        pg.start()
        wait_until(lambda: _queues_answer(server), 30)
        assert [q["name"] for q in c.list_queues("default")] == ["q"]
    finally:
        server.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)


def _queues_answer(server: LiveServer) -> bool:
    response = httpx.get(
        f"{server.host}/api/v1/entities/default/queues",
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=30,
    )
    return response.status_code == 200
