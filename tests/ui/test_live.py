"""The queue, run and agents pages, their live endpoints, log streaming and download."""

from __future__ import annotations

import json
import re
import threading
import time

from tests.conftest import ServerHarness
from tests.ui.conftest import ProtocolAgent, login, make_queue


def submit(c: object, **values: object) -> str:
    body = {"queue": "gpu", "command": ["python", "train.py"], "values": values}
    return str(c.submit("default", body)["id"])  # type: ignore[attr-defined]


def queued_rows(html: str) -> list[tuple[int, str]]:
    """(position, run id) of the queued table, in page order."""
    section = html.split("<h2>Queued", 1)[1].split("<h2>In flight", 1)[0]
    rows = re.findall(r'<td class="num">(\d+)</td>\s*<td><a href="/ui/runs/(\w+)"', section)
    return [(int(p), r) for p, r in rows]


def test_queued_runs_are_paged_in_claim_order_with_positions(server: ServerHarness) -> None:
    login(server)
    c = server.client()
    make_queue(c, priority=True)
    ids = [submit(c) for _ in range(55)]
    urgent = c.submit(
        "default", {"queue": "gpu", "command": ["python", "x.py"], "priority": "critical"}
    )["id"]
    first = server.http.get("/ui/e/default/queues/gpu")
    assert first.status_code == 200
    rows = queued_rows(first.text)
    assert rows[0] == (1, urgent)  # priority first, then first in, first out
    assert [r for _, r in rows[1:]] == ids[:49]
    assert [p for p, _ in rows] == list(range(1, 51))
    cursor = re.search(r'href="\?after=([\w%-]+)"', first.text)
    assert cursor is not None
    second = server.http.get(f"/ui/e/default/queues/gpu?after={cursor.group(1)}")
    assert queued_rows(second.text) == [(50 + i, r) for i, r in enumerate(ids[49:], start=1)]
    assert 'href="?after=' not in second.text and 'href="?">First page' in second.text
    for page in (first.text, second.text):  # the URL each page polls for its live part
        url = re.search(r'data-live-url="([^"]+)"', page)
        assert url is not None
        assert server.http.get(url.group(1).replace("&amp;", "&")).status_code == 200
    live = server.http.get(f"/ui/api/e/default/queues/gpu/live?after={cursor.group(1)}").json()
    assert live["counts"] == {"queued": 56}
    assert queued_rows(live["html"]) == queued_rows(second.text)


def test_the_queue_page_says_why_each_run_waits(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    big, small = submit(c, gpus=4), submit(c, gpus=1)
    page = ui.http.get("/ui/e/default/queues/gpu").text
    assert page.count("no agent for this queue: start one with") == 2
    agent = ProtocolAgent(c, ["gpu"], gpu_ids=[0, 1])
    agent.claim(free_gpus=0)  # both GPUs busy elsewhere: nothing fits
    page = ui.http.get("/ui/e/default/queues/gpu").text
    assert "needs 4 GPUs, but the largest agent for this queue has 2" in page
    assert "needs 1 GPUs, 0 free" in page
    assert (big, small) == tuple(r for _, r in queued_rows(page))
    assert "a1: 4 free slots, 0/2 GPUs free" in page


def test_running_and_recent_runs_with_reasons_and_a_recent_pager(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    ids = [submit(c, gpus=0) for _ in range(30)]
    agent = ProtocolAgent(c, ["gpu"])
    for _ in range(8):
        agent.claim()
    for run_id in ids[:27]:
        agent.report(run_id, "failed", reason="exit code 3", exit_code=3)
    agent.report(ids[27], "starting", reason="Insufficient nvidia.com/gpu")
    agent.report(ids[28], "running")
    page = ui.http.get("/ui/e/default/queues/gpu").text
    in_flight = page.split("<h2>In flight", 1)[1].split("<h2>Recent", 1)[0]
    assert ids[27] in in_flight and "Insufficient nvidia.com/gpu" in in_flight
    assert ids[28] in in_flight and ids[29] in in_flight  # claimed counts as in flight
    recent = page.split("<h2>Recent", 1)[1]
    assert recent.count("exit code 3") == 25 and ids[26] in recent and ids[1] not in recent
    older = re.search(r'href="\?before=(\d+)"', recent)
    assert older is not None
    rest = ui.http.get(f"/ui/e/default/queues/gpu?before={older.group(1)}").text
    assert ids[0] in rest.split("<h2>Recent", 1)[1] and ids[26] not in rest


def test_run_page_shows_timeline_config_values_and_job(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    run_id = submit(c, gpus=2, size="md")
    agent = ProtocolAgent(c, ["gpu"], gpu_ids=[0, 1, 2, 3])
    agent.claim()
    agent.report(run_id, "running", gpu_ids=[2, 3])
    page = ui.http.get(f"/ui/runs/{run_id}").text
    for text in (
        "submitted by admin",
        "claimed by agent a1",
        "gpus: 2",  # resolved config
        "SIZE: md",
        "2 (devices 2, 3)",
        '/jobs/train">train</a> v0',
        "Stop and cancel",
        f'data-stream-url="/ui/runs/{run_id}/logs/stream?offset=0"',
    ):
        assert text in page, text
    live = ui.http.get(f"/ui/api/runs/{run_id}/live").json()
    assert live["state"] == "running" and not live["terminal"]
    assert "claimed by agent a1" in live["html"]
    cancelled = ui.http.post(f"/ui/runs/{run_id}/cancel", follow_redirects=False)
    assert cancelled.status_code == 303
    assert c.get_run(run_id)["state"] == "running"  # the agent stops it and reports
    agent.report(run_id, "cancelled", reason="cancelled by admin")
    live = ui.http.get(f"/ui/api/runs/{run_id}/live").json()
    assert live["terminal"] and "cancel-run" not in live["html"]


def sse_events(body: str) -> list[tuple[str, str]]:
    events = []
    for block in body.split("\n\n"):
        name, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            events.append((name, data))
    return events


def test_logs_stream_as_server_sent_events_and_follow_the_tail(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    run_id = submit(c, gpus=0)
    agent = ProtocolAgent(c, ["gpu"])
    agent.claim()
    agent.report(run_id, "running")
    agent.log(run_id, "line 1\n")

    def finish_later() -> None:
        time.sleep(0.3)  # the stream has sent line 1 and waits on the notifier
        agent.log(run_id, "line 2\nünïcode ✓\n")
        agent.report(run_id, "finished", exit_code=0)

    writer = threading.Thread(target=finish_later)
    writer.start()
    started = time.monotonic()
    response = ui.http.get(f"/ui/runs/{run_id}/logs/stream")
    writer.join()
    assert time.monotonic() - started < 5
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == ("end", "{}")
    text = "".join(json.loads(d) for name, d in events if name == "message")
    assert text == "line 1\nline 2\nünïcode ✓\n"
    ids = re.findall(r"^id: (\d+)$", response.text, re.M)
    assert ids[-1] == str(len(text))  # a log offset: a reconnect resumes there

    resumed = ui.http.get(f"/ui/runs/{run_id}/logs/stream", headers={"Last-Event-ID": "7"})
    assert "".join(json.loads(d) for n, d in sse_events(resumed.text) if n == "message") == (
        "line 2\nünïcode ✓\n"
    )
    download = ui.http.get(f"/ui/runs/{run_id}/logs.txt")
    assert download.text == text
    assert download.headers["content-disposition"] == f'attachment; filename="{run_id}.log"'


def test_the_run_page_starts_a_long_log_near_its_tail(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    run_id = submit(c, gpus=0)
    agent = ProtocolAgent(c, ["gpu"])
    agent.claim()
    agent.report(run_id, "running")
    agent.log(run_id, "x" * 250_000 + "\n")
    page = ui.http.get(f"/ui/runs/{run_id}").text
    assert "logs/stream?offset=50001" in page and "the download has all 250001" in page


def test_agents_page_shows_heartbeat_queues_runs_and_gpu_holders(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    run_id = submit(c, gpus=2)
    agent = ProtocolAgent(c, ["gpu"], gpu_ids=[0, 1, 2, 3])
    agent.claim()
    agent.claim(free_gpus=2, free_slots=3, holders={"1": run_id, "3": run_id})
    page = ui.http.get("/ui/agents").text
    flat = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "a1 host-1 active 0 s ago gpu" in flat
    assert f"GPU 0: free GPU 1: {run_id} GPU 2: free GPU 3: {run_id}" in flat
    assert f'<a href="/ui/runs/{run_id}"><code>{run_id}</code></a>' in page
    assert "3 of 4" in flat  # free slots of max jobs


def test_queues_page_counts_states_and_names_the_agents(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    make_queue(c, "idle")
    for _ in range(3):
        submit(c, gpus=0)
    agent = ProtocolAgent(c, ["gpu"])
    first = agent.claim()[0]
    agent.report(first, "finished", exit_code=0)
    flat = " ".join(re.sub(r"<[^>]+>", " ", ui.http.get("/ui/queues").text).split())
    assert "gpu local 0 2 1 0 0 a1" in flat  # 3 submitted: 2 in flight (claimed), 1 finished
    assert "idle local 0 0 0 0 0 none: start one with" in flat


def test_outputs_are_listed_images_inline_and_other_files_as_downloads(ui: ServerHarness) -> None:
    c = ui.client()
    make_queue(c)
    run_id = submit(c, gpus=0)
    bearer = {"Authorization": f"Bearer {ui.admin_key}"}
    for path, body in (("images/a b.png", b"\x89PNG fake"), ("metrics.json", b'{"loss": 1}')):
        put = ui.http.put(f"/api/v1/runs/{run_id}/files/{path}", content=body, headers=bearer)
        assert put.status_code == 201, put.text
    page = ui.http.get(f"/ui/runs/{run_id}").text
    image_url = f"/ui/runs/{run_id}/files/images/a%20b.png"
    assert f'<img src="{image_url}" alt="output images/a b.png"' in page
    assert f'href="/ui/runs/{run_id}/files/metrics.json" download' in page
    live = ui.http.get(f"/ui/api/runs/{run_id}/live").json()
    assert image_url in live["outputs_html"]

    image = ui.http.get(image_url)
    assert image.content == b"\x89PNG fake" and image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")
    metrics = ui.http.get(f"/ui/runs/{run_id}/files/metrics.json")
    assert metrics.headers["content-disposition"].startswith("attachment")
    assert metrics.headers["content-security-policy"].startswith("sandbox")
    assert ui.http.get(f"/ui/runs/{run_id}/files/..%2Fx").status_code in (404, 422)
    assert ui.http.get(f"/ui/runs/{run_id}/files/nope.png").status_code == 404
    ui.http.cookies.clear()
    assert ui.http.get(image_url).status_code == 401


def test_secret_values_in_a_queue_config_are_never_shown(ui: ServerHarness) -> None:
    c = ui.client()
    config = "env:\n  HF_TOKEN: {secret: hf_abcdef123456}\n  MODE: fast\n"
    c.create_queue("default", {"name": "gpu", "config": config})
    run_id = c.submit("default", {"queue": "gpu", "command": ["true"]})["id"]
    for path in ("/ui/e/default/queues/gpu", f"/ui/runs/{run_id}"):
        page = ui.http.get(path).text
        assert "hf_abcdef123456" not in page and "***" in page, path
