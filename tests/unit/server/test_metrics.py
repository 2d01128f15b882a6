"""/metrics: the queue gauge counts live runs only, by index, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

from launchyard.server.metrics import GAUGED_STATES, live_counts

from .test_agents import claim, report, setup, submit


def gauge(server) -> dict[tuple[str, str], float]:  # type: ignore[no-untyped-def]
    text = server.http.get("/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}).text
    return {
        (queue, state): float(value)
        for queue, state, value in re.findall(
            r'^launchyard_queue_runs\{entity="default",queue="([^"]+)",state="(\w+)"\} (\S+)$',
            text,
            re.M,
        )
    }


def test_the_queue_gauge_counts_live_runs_and_leaves_ended_ones_to_counters(server) -> None:  # type: ignore[no-untyped-def]
    c = server.client()
    agent_id = setup(c)
    c.create_queue("default", {"name": "empty", "config": "{}"})
    done, running, _queued = submit(c, 1), submit(c, 1), submit(c, 1)
    tokens = {r["id"]: r["lease_token"] for r in claim(c, agent_id, 2, 2)["runs"]}
    report(c, done, tokens[done], "running")
    report(c, done, tokens[done], "finished", exit_code=0)
    report(c, running, tokens[running], "running")
    cancelled = submit(c, 1)
    c.cancel(cancelled)

    assert gauge(server) == {
        ("gpu", "queued"): 1.0,
        ("gpu", "claimed"): 0.0,
        ("gpu", "starting"): 0.0,
        ("gpu", "running"): 1.0,
        # A queue with nothing live reads 0 instead of vanishing from the scrape.
        **{("empty", state): 0.0 for state in GAUGED_STATES},
    }
    text = server.http.get("/metrics", headers={"Authorization": f"Bearer {server.admin_key}"}).text
    assert re.search(r'^launchyard_runs_ended_total\{state="finished"\} [1-9]', text, re.M)


def test_the_gauge_query_reads_the_claim_index_only(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """A covering-index search: a scan of the runs table would grow with every run stored."""
    db = sqlite_server.http.app.state.launchyard.db
    with db.engine.connect() as conn:
        sql = str(live_counts([1, 2]).compile(conn, compile_kwargs={"literal_binds": True}))
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "COVERING INDEX ix_runs_claim" in plan, plan
