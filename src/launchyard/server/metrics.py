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
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from launchyard.models.runs import ACTIVE_STATES, RunState
from launchyard.server.db import Database
from launchyard.server.tables import AgentRow, EntityRow, QueueRow, RunRow

GAUGED_STATES = [s.value for s in RunState if s is RunState.QUEUED or s in ACTIVE_STATES]
"""States the queue gauge counts. Ended runs only pile up (a count over them grows with
history at every scrape); ``launchyard_runs_ended`` counts them instead."""

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
            "launchyard_queue_runs",
            "Runs per queue, queued or in flight (ended runs: launchyard_runs_ended)",
            labels=["entity", "queue", "state"],
        )
        alive = GaugeMetricFamily("launchyard_agents_alive", "Agents seen within the lease time")
        gpus_total = GaugeMetricFamily(
            "launchyard_agent_gpus", "GPUs an agent owns", labels=["agent"]
        )
        gpus_busy = GaugeMetricFamily(
            "launchyard_agent_gpus_busy", "GPUs held by runs", labels=["agent"]
        )
        with self.db.session() as sess:
            for labels, count in _queue_counts(sess).items():
                depth.add_metric(list(labels), count)
            cutoff = datetime.now().astimezone().timestamp() - self.lease_ttl_s
            n_alive = 0
            for agent in sess.execute(select(AgentRow)).scalars():
                is_alive = agent.state != "stopped" and agent.last_seen_at.timestamp() >= cutoff
                n_alive += is_alive
                gpus_total.add_metric([agent.name], len(agent.gpu_ids))
                gpus_busy.add_metric([agent.name], len(agent.gpu_ids) - agent.free_gpus)
            alive.add_metric([], n_alive)
        yield from (depth, alive, gpus_total, gpus_busy)


def live_counts(queue_ids: list[int]) -> Select[int, str, int]:
    """Runs per (queue, gauged state). Both prefix columns of ix_runs_claim (queue_id,
    state, …) are pinned, so the database counts index entries of live runs only, in index
    order: no sort, no table rows, nothing read for ended runs."""
    return (
        select(RunRow.queue_id, RunRow.state, func.count())
        .where(RunRow.queue_id.in_(queue_ids), RunRow.state.in_(GAUGED_STATES))
        .group_by(RunRow.queue_id, RunRow.state)
    )


def _queue_counts(sess: Session) -> dict[tuple[str, str, str], int]:
    """(entity, queue, state) → runs, for every queue and gauged state (zeros included, so
    a queue that empties reads 0 rather than vanishing)."""
    queues = {
        qid: (entity, queue)
        for qid, queue, entity in sess.execute(
            select(QueueRow.id, QueueRow.name, EntityRow.name).join(
                EntityRow, EntityRow.id == QueueRow.entity_id
            )
        )
    }
    counts = {(*names, state): 0 for names in queues.values() for state in GAUGED_STATES}
    if not queues:
        return counts
    for queue_id, state, count in sess.execute(live_counts(list(queues))):
        counts[(*queues[queue_id], state)] = count
    return counts


def render(app_registry: CollectorRegistry) -> bytes:
    return generate_latest(TRANSITIONS) + generate_latest(app_registry)
