"""What each page shows, read through the services in one short session per request.

Every list is bounded (LIMIT) and walks an index: the queue page costs the same
with 100 runs or 100,000. The few reads no service offers yet (projects of an
entity, the last run of a job, a job rename) live at the bottom of this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from launchyard.config import ServerSettings
from launchyard.errors import ConflictError
from launchyard.models import secrets
from launchyard.models.runs import ACTIVE_STATES, TERMINAL_STATES, RunState
from launchyard.scheduling import AgentView, explain_wait
from launchyard.server.schemas.agents import AgentResponse
from launchyard.server.schemas.runs import RunResponse
from launchyard.server.services import agents as agents_service
from launchyard.server.services import jobs as jobs_service
from launchyard.server.services import queues as queues_service
from launchyard.server.services import runs as runs_service
from launchyard.server.services.auth import Principal, Role, now
from launchyard.server.services.entities import check_name, get_entity, visible_entities
from launchyard.server.tables import EntityRow, JobRow, ProjectRow, QueueRow, RunRow

QUEUED_PAGE = 50
ACTIVE_LIMIT = 50
RECENT_PAGE = 25
STATE_ORDER = [s.value for s in RunState if s is not RunState.PREEMPTED]


@dataclass
class QueueSummary:
    row: QueueRow
    counts: dict[str, int]
    agents: list[tuple[str, bool]]
    """(name, alive) of each agent serving the queue."""


@dataclass
class EntityQueues:
    entity: EntityRow
    queues: list[QueueSummary] = field(default_factory=list)


def viewable_entity(sess: Session, who: Principal, name: str) -> EntityRow:
    entity = get_entity(sess, name)
    who.require(entity, Role.VIEWER, "viewing this entity")
    return entity


def _alive(agent: Any, lease_ttl_s: float, now_s: float) -> bool:
    return bool(agent.state != "stopped" and agent.last_seen_at.timestamp() >= now_s - lease_ttl_s)


def queues_overview(sess: Session, who: Principal, lease_ttl_s: float) -> list[EntityQueues]:
    now_s = now().timestamp()
    out = []
    for entity in visible_entities(sess, who):
        queues = queues_service.list_queues(sess, entity)
        counts = queues_service.state_counts(sess, [q.id for q in queues])
        agents = agents_service.list_agents(sess, entity)
        group = EntityQueues(entity)
        for q in queues:
            serving = [
                (a.name, _alive(a, lease_ttl_s, now_s)) for a in agents if q.id in a.queue_ids
            ]
            group.queues.append(QueueSummary(q, counts[q.id], serving))
        out.append(group)
    return out


@dataclass
class QueuedRun:
    run: RunResponse
    position: int
    waiting: str


@dataclass
class QueueView:
    entity: EntityRow
    queue: QueueRow
    counts: dict[str, int]
    agents: list[AgentView]
    queued: list[QueuedRun]
    next_after: str | None
    active: list[RunResponse]
    recent: list[RunResponse]
    next_before: int | None

    @property
    def config_text(self) -> str:
        """The template as its admin wrote it, with secret values shown as ***."""
        parsed = queues_service.parsed_config(self.queue.config_text)
        return secrets.mask_text(self.queue.config_text, secrets.values(parsed))


def parse_after(raw: str | None) -> tuple[int, int] | None:
    """The queued list's cursor: ``RANK-SEQ`` of the last run shown."""
    if not raw:
        return None
    rank, _, seq = raw.partition("-")
    if not (rank.isdigit() and seq.isdigit()):
        return None
    return int(rank), int(seq)


def queue_view(
    sess: Session,
    who: Principal,
    entity_name: str,
    queue_name: str,
    settings: ServerSettings,
    *,
    after: str | None = None,
    before: int | None = None,
) -> QueueView:
    entity = viewable_entity(sess, who, entity_name)
    queue = queues_service.get_queue(sess, entity, queue_name)
    names = runs_service.Names(sess)
    names.remember(EntityRow, entity.id, entity.name)
    names.remember(QueueRow, queue.id, queue.name)

    # Queued runs in claim order (priority, then age), paged by that key: the claim index.
    query = (
        select(RunRow)
        .where(RunRow.queue_id == queue.id, RunRow.state == RunState.QUEUED.value)
        .order_by(RunRow.priority_rank, RunRow.seq)
        .limit(QUEUED_PAGE + 1)
    )
    cursor = parse_after(after)
    if cursor is not None:
        query = query.where(tuple_(RunRow.priority_rank, RunRow.seq) > tuple_(*cursor))
    rows = list(sess.execute(query).scalars())
    more = len(rows) > QUEUED_PAGE
    rows = rows[:QUEUED_PAGE]
    agents = runs_service.agent_views(sess, queue.id, settings.lease_ttl_s)
    queued: list[QueuedRun] = []
    if rows:
        first = runs_service.queue_position(sess, rows[0])
        head_id = rows[0].id if first == 1 else None
        # Whether the head holds a reservation is the same answer for every run behind it.
        behind = next((r for r in rows if r.id != head_id), None)
        reserved = (
            runs_service.behind_reservation(sess, behind, agents, settings.reserve_after_s)
            if behind is not None
            else None
        )
        reasons: dict[int, str] = {}
        for i, row in enumerate(rows):
            if row.gpus not in reasons:
                reasons[row.gpus] = explain_wait(row.gpus, agents)
            waiting = reasons[row.gpus] if row.id == head_id or reserved is None else reserved
            response = runs_service.to_response(sess, row, names, detail=False)
            queued.append(QueuedRun(response, first + i, waiting))
    next_after = f"{rows[-1].priority_rank}-{rows[-1].seq}" if more else None

    # Not runs_service.list_runs: its entity filter steers SQLite to the (entity, seq) index,
    # which walks every run of the entity to find the few in flight. The claim index
    # (queue, state, ...) finds them directly; they are few (bounded by agent slots).
    active = sess.execute(
        select(RunRow)
        .where(RunRow.queue_id == queue.id, RunRow.state.in_([s.value for s in ACTIVE_STATES]))
        .order_by(RunRow.seq.desc())
        .limit(ACTIVE_LIMIT)
    ).scalars()
    recent, next_before = runs_service.list_runs(
        sess, entity, queue=queue, states=sorted(TERMINAL_STATES), limit=RECENT_PAGE, before=before
    )
    return QueueView(
        entity=entity,
        queue=queue,
        counts=queues_service.state_counts(sess, [queue.id])[queue.id],
        agents=agents,
        queued=queued,
        next_after=next_after,
        active=[runs_service.to_response(sess, r, names, detail=False) for r in active],
        recent=[runs_service.to_response(sess, r, names, detail=False) for r in recent],
        next_before=next_before,
    )


def agents_overview(
    sess: Session, who: Principal, lease_ttl_s: float
) -> list[tuple[EntityRow, list[AgentResponse]]]:
    out = []
    for entity in visible_entities(sess, who):
        rows = agents_service.list_agents(sess, entity)
        out.append((entity, [agents_service.to_response(sess, a, lease_ttl_s) for a in rows]))
    return out


# --- reads and writes no service offers yet ------------------------------------------------


def list_projects(sess: Session, entity: EntityRow) -> list[tuple[ProjectRow, int]]:
    """An entity's projects with how many jobs each holds."""
    jobs = select(JobRow.project_id, func.count().label("n")).group_by(JobRow.project_id).subquery()
    rows = sess.execute(
        select(ProjectRow, func.coalesce(jobs.c.n, 0))
        .outerjoin(jobs, jobs.c.project_id == ProjectRow.id)
        .where(ProjectRow.entity_id == entity.id)
        .order_by(ProjectRow.name)
    )
    return [(p, int(n)) for p, n in rows]


def last_run_of_job(sess: Session, job: JobRow) -> RunRow | None:
    """The job's newest run: its values pre-fill the launch drawer.

    No index covers ``runs.job_id``: this walks runs newest first until one of the
    job's, which is quick for a job that ran lately and bounded by the table's size.
    """
    return sess.execute(
        select(RunRow)
        .where(RunRow.job_id == job.id, RunRow.project_id == job.project_id)
        .order_by(RunRow.seq.desc())
        .limit(1)
    ).scalar_one_or_none()


def rename_job(sess: Session, who: Principal, entity: EntityRow, job: JobRow, new: str) -> None:
    """Rename a job in place: runs point at it by id, so its history follows it."""
    who.require(entity, Role.MEMBER, "renaming a job")
    check_name("job", new)
    if new == job.name:
        return
    taken = sess.execute(
        select(JobRow.id).where(JobRow.project_id == job.project_id, JobRow.name == new)
    ).first()
    if taken:
        raise ConflictError(
            f"job '{new}' already exists in this project; pick another name",
            fields={"job": new},
        )
    job.name = new


def job_versions(sess: Session, job: JobRow) -> tuple[list[Any], dict[int, list[str]]]:
    versions = jobs_service.versions(sess, job)
    aliases: dict[int, list[str]] = {}
    for alias, number in jobs_service.aliases(sess, job):
        aliases.setdefault(number, []).append(alias)
    return versions, aliases
