"""Prometheus metrics at ``/metrics``: the numbers a team's Grafana (and our benchmarks) read.

Counters and histograms are observed where runs change state (this process);
gauges (queue depth, agents, GPUs) are read from the database at scrape time,
so every server process sharing one database reports the same totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from launchyard.server.db import Database
from launchyard.server.tables import AgentRow, EntityRow, QueueRow, RunRow

TRANSITIONS = CollectorRegistry()
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
RUNS_ENDED = Counter(
    "launchyard_runs_ended", "Runs that reached an end state", ["state"], registry=TRANSITIONS
)
RUNS_STARTED = Counter("launchyard_runs_started", "Runs that started running", registry=TRANSITIONS)
WAIT_SECONDS = Histogram(
    "launchyard_run_wait_seconds",
    "Time queued before an agent claimed the run",
    buckets=_SECONDS,
    registry=TRANSITIONS,
)
SUBMIT_TO_RUNNING_SECONDS = Histogram(
    "launchyard_submit_to_running_seconds",
    "Time from submission to running",
    buckets=_SECONDS,
    registry=TRANSITIONS,
)


def observe(state: str, at: datetime, queued_at: datetime, created_at: datetime) -> None:
    """Record one transition (called by the runs service)."""
    if state == "claimed":
        WAIT_SECONDS.observe(max((at - queued_at).total_seconds(), 0))
    elif state == "running":
        RUNS_STARTED.inc()
        SUBMIT_TO_RUNNING_SECONDS.observe(max((at - created_at).total_seconds(), 0))
    elif state in ("finished", "failed", "crashed", "cancelled"):
        RUNS_ENDED.labels(state=state).inc()


class DatabaseCollector(Collector):
    def __init__(self, db: Database, lease_ttl_s: float) -> None:
        self.db = db
        self.lease_ttl_s = lease_ttl_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "launchyard_queue_runs", "Runs per queue and state", labels=["entity", "queue", "state"]
        )
        alive = GaugeMetricFamily("launchyard_agents_alive", "Agents seen within the lease time")
        gpus_total = GaugeMetricFamily(
            "launchyard_agent_gpus", "GPUs an agent owns", labels=["agent"]
        )
        gpus_busy = GaugeMetricFamily(
            "launchyard_agent_gpus_busy", "GPUs held by runs", labels=["agent"]
        )
        with self.db.session() as sess:
            rows = sess.execute(
                select(EntityRow.name, QueueRow.name, RunRow.state, func.count())
                .join(QueueRow, QueueRow.id == RunRow.queue_id)
                .join(EntityRow, EntityRow.id == QueueRow.entity_id)
                .group_by(EntityRow.name, QueueRow.name, RunRow.state)
            )
            for entity, queue, state, count in rows:
                depth.add_metric([entity, queue, state], count)
            cutoff = datetime.now().astimezone().timestamp() - self.lease_ttl_s
            n_alive = 0
            for agent in sess.execute(select(AgentRow)).scalars():
                is_alive = agent.state != "stopped" and agent.last_seen_at.timestamp() >= cutoff
                n_alive += is_alive
                gpus_total.add_metric([agent.name], len(agent.gpu_ids))
                gpus_busy.add_metric([agent.name], len(agent.gpu_ids) - agent.free_gpus)
            alive.add_metric([], n_alive)
        yield from (depth, alive, gpus_total, gpus_busy)


def render(app_registry: CollectorRegistry) -> bytes:
    return generate_latest(TRANSITIONS) + generate_latest(app_registry)
