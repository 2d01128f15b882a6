"""Agents: registration, claims under leases, heartbeats, reports, and the lease reaper.

Every update an agent makes to a run is guarded by its lease token
(``WHERE id = :id AND lease_token = :token``): zero rows means the agent lost
the lease (it expired and the run was requeued), and the update is refused
with StaleLeaseError so the agent stops its copy.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from launchyard import scheduling
from launchyard.backends import get_backend_class
from launchyard.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StaleLeaseError,
)
from launchyard.models.runs import (
    ACTIVE_STATES,
    AGENT_TRANSITIONS,
    MAX_ATTEMPTS,
    Phase,
    RunState,
)
from launchyard.server.notify import Topic, claim_topics
from launchyard.server.schemas.agents import (
    AgentRegisterRequest,
    AgentResponse,
    Capacity,
    ClaimedRun,
    ClaimResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    LogAppend,
    QueueRef,
    StateReport,
)
from launchyard.server.services.auth import Principal, Role, hash_key, now
from launchyard.server.services.queues import get_queue
from launchyard.server.services.runs import Names, transition
from launchyard.server.tables import (
    AgentRow,
    EntityRow,
    ProjectRow,
    QueueRow,
    RunLogRow,
    RunRow,
)

CLAIM_SCAN_LIMIT = 500
"""Queued runs examined per claim: enough to backfill past a blocked head."""

_ACTIVE = [s.value for s in ACTIVE_STATES]
OUTPUT_TOKEN_PREFIX = "lyr_"


def register(
    sess: Session, who: Principal, entity: EntityRow, req: AgentRegisterRequest, lease_ttl_s: float
) -> tuple[AgentRow, list[QueueRef]]:
    who.require(entity, Role.MEMBER, "running an agent", agent_ok=True)
    queues = [get_queue(sess, entity, name) for name in req.queues]
    if who.queue_scope is not None:
        outside = [q.name for q in queues if q.id not in who.queue_scope]
        if outside:
            raise PermissionDeniedError(
                f"this agent key may not serve queue(s) {', '.join(outside)}; ask an admin "
                "of the entity for a key that covers them",
                fields={"queues": outside},
            )
    for q in queues:
        if q.resource not in req.resources:
            raise InvalidInputError(
                f"queue '{q.name}' is a {q.resource} queue and this agent runs only "
                f"{', '.join(req.resources)}",
                fields={"queue": q.name, "resource": q.resource},
            )
    agent = sess.execute(
        select(AgentRow).where(AgentRow.entity_id == entity.id, AgentRow.name == req.name)
    ).scalar_one_or_none()
    if agent is None:
        agent = AgentRow(entity_id=entity.id, name=req.name, created_at=now(), capacity_seq=0)
        sess.add(agent)
    # A restarted agent keeps its id (same name): its runs stay its own to adopt.
    agent.hostname = req.hostname
    agent.queue_ids = [q.id for q in queues]
    agent.max_jobs = req.max_jobs
    agent.gpu_ids = list(req.gpu_ids)
    agent.state = "active"
    agent.free_gpus = len(req.gpu_ids)
    agent.free_slots = req.max_jobs
    agent.gpu_holders = {}
    agent.last_seen_at = now()
    sess.flush()
    return agent, [QueueRef(id=q.id, name=q.name, resource=q.resource) for q in queues]


def get_agent(sess: Session, who: Principal, agent_id: int, role: Role = Role.MEMBER) -> AgentRow:
    agent = sess.get(AgentRow, agent_id)
    if agent is None or not (who.is_superuser or agent.entity_id in who.roles):
        raise NotFoundError(f"agent {agent_id} does not exist", fields={"agent": agent_id})
    entity = sess.get(EntityRow, agent.entity_id)
    assert entity is not None
    who.require(entity, role, "acting as this agent", agent_ok=True)
    return agent


def _update_capacity(agent: AgentRow, cap: Capacity) -> None:
    agent.last_seen_at = now()
    if cap.seq >= agent.capacity_seq:
        agent.capacity_seq = cap.seq
        agent.free_gpus = min(cap.free_gpus, len(agent.gpu_ids))
        agent.free_slots = min(cap.free_slots, agent.max_jobs)
        agent.gpu_holders = dict(cap.gpu_holders)


def _cancels(sess: Session, agent: AgentRow) -> list[str]:
    return list(
        sess.execute(
            select(RunRow.id).where(
                RunRow.agent_id == agent.id,
                RunRow.cancel_requested.is_(True),
                RunRow.state.in_(_ACTIVE),
            )
        ).scalars()
    )


def claim(
    sess: Session,
    agent: AgentRow,
    cap: Capacity | None,
    *,
    lease_ttl_s: float,
    reserve_after_s: float,
    is_postgres: bool,
) -> ClaimResponse:
    """Hand out the queued runs that fit the agent's free capacity, in one short transaction.

    ``cap`` comes with the agent's request; a long poll's re-attempts pass None and
    write nothing unless they hand something out.
    """
    if cap is not None:
        _update_capacity(agent, cap)
    draining = agent.state == "draining"
    claimed: list[ClaimedRun] = []
    if not draining and agent.free_slots > 0 and agent.queue_ids:
        queues = {
            q.id: q
            for q in sess.execute(
                select(QueueRow).where(QueueRow.id.in_(agent.queue_ids))
            ).scalars()
        }
        agent_gpus = _assigns_gpus(queues)
        at = now()
        picked = pick_runs(sess, agent, agent_gpus, at, reserve_after_s, is_postgres)
        rows = sess.execute(select(RunRow).where(RunRow.id.in_(picked))).scalars()
        by_id = {r.id: r for r in rows}
        names = Names(sess)
        for run_id in picked:
            run = by_id[run_id]
            run.agent_id = agent.id
            run.lease_token = secrets.token_hex(16)
            run.lease_expires_at = at + timedelta(seconds=lease_ttl_s)
            run.attempt += 1
            run.log_bytes = 0
            output_token = OUTPUT_TOKEN_PREFIX + secrets.token_urlsafe(24)
            run.output_token_hash = hash_key(output_token)
            transition(sess, run, RunState.CLAIMED, f"claimed by agent {agent.name}", Phase.AGENT)
            agent.free_gpus -= run.gpus if agent_gpus[run.queue_id] else 0
            agent.free_slots -= 1
            claimed.append(
                ClaimedRun(
                    id=run.id,
                    attempt=run.attempt,
                    lease_token=run.lease_token,
                    entity=names.of(EntityRow, run.entity_id) or "?",
                    project=names.of(ProjectRow, run.project_id) or "?",
                    queue=queues[run.queue_id].name,
                    resource=queues[run.queue_id].resource,
                    image=run.image,
                    command=list(run.command),
                    env=dict(run.env),
                    gpus=run.gpus,
                    resolved_config=dict(run.resolved_config),
                    run_config=dict(run.run_config),
                    values=dict(run.values),
                    log_bytes=0,
                    output_token=output_token,
                    time_limit_s=run.time_limit_s,
                )
            )
        if claimed and cap is None:
            agent.last_seen_at = at
    return ClaimResponse(runs=claimed, cancel=_cancels(sess, agent), draining=draining)


def pick_runs(
    sess: Session,
    agent: AgentRow,
    agent_gpus: dict[int, bool],
    at: datetime,
    reserve_after_s: float,
    is_postgres: bool,
) -> list[str]:
    """The ids of the queued runs to hand to ``agent`` now (``scheduling.pick``).

    Reads only the columns the decision needs: a wake-up that finds nothing to start
    costs an index scan, not hundreds of full rows."""
    query = (
        select(
            RunRow.id,
            RunRow.queue_id,
            RunRow.gpus,
            RunRow.priority_rank,
            RunRow.seq,
            RunRow.blocked_since,
            RunRow.time_limit_s,
        )
        .where(RunRow.queue_id.in_(agent.queue_ids), RunRow.state == RunState.QUEUED.value)
        .order_by(RunRow.priority_rank, RunRow.seq)
        .limit(CLAIM_SCAN_LIMIT)
    )
    if is_postgres:
        # Two agents claiming at once skip each other's rows instead of queueing.
        query = query.with_for_update(skip_locked=True)
    candidates = [
        scheduling.Candidate(
            run_id=row.id,
            gpus=row.gpus if agent_gpus.get(row.queue_id) else 0,
            priority_rank=row.priority_rank,
            seq=row.seq,
            blocked_since=row.blocked_since.timestamp() if row.blocked_since else None,
            time_limit_s=row.time_limit_s,
        )
        for row in sess.execute(query)
    ]
    if not candidates:
        return []
    held = [
        scheduling.Held(gpus, deadline.timestamp() if deadline is not None else None)
        for queue_id, gpus, deadline in sess.execute(
            select(RunRow.queue_id, RunRow.gpus, RunRow.deadline_at).where(
                RunRow.agent_id == agent.id, RunRow.state.in_(_ACTIVE)
            )
        )
        if gpus and agent_gpus.get(queue_id)
    ]
    decision = scheduling.pick(
        candidates,
        scheduling.Capacity(
            free_gpus=agent.free_gpus,
            total_gpus=len(agent.gpu_ids),
            free_slots=agent.free_slots,
            held=held,
        ),
        now=at.timestamp(),
        reserve_after_s=reserve_after_s,
        explain=False,
    )
    blocked = decision.first_blocked
    if (
        blocked is not None
        and next(c for c in candidates if c.run_id == blocked).blocked_since is None
    ):
        # Its reservation clock starts now (once: later claims see the stamp).
        sess.execute(update(RunRow).where(RunRow.id == blocked).values(blocked_since=at))
    return decision.picked


def wake_topics(sess: Session, agent: AgentRow) -> frozenset[Topic]:
    """What can give a claim that found nothing something to hand out (``notify.py``)."""
    if agent.free_slots <= 0 or agent.state == "draining":
        return claim_topics(agent.id, [])  # only a change of its own capacity or state
    # sess.get: the claim just loaded these queues, so the session's identity map answers.
    queues = [q for q in (sess.get(QueueRow, qid) for qid in agent.queue_ids) if q is not None]
    assigns = _assigns_gpus({q.id: q for q in queues})
    gpu_queues = [qid for qid, yes in assigns.items() if yes]
    other_queues = [qid for qid, yes in assigns.items() if not yes]
    return claim_topics(agent.id, other_queues, gpu_queues, agent.free_gpus)


def _assigns_gpus(queues: dict[int, QueueRow]) -> dict[int, bool]:
    """Per queue: whether the agent counts GPUs against itself (it assigns devices), or the
    engine's own scheduler places them (clusters)."""
    return {qid: get_backend_class(q.resource).assigns_gpus for qid, q in queues.items()}


def heartbeat(
    sess: Session, agent: AgentRow, req: HeartbeatRequest, *, lease_ttl_s: float
) -> HeartbeatResponse:
    _update_capacity(agent, req.capacity)
    expires = now() + timedelta(seconds=lease_ttl_s)
    lost: list[str] = []
    log_bytes: dict[str, int] = {}
    for held in req.runs:
        result = sess.execute(
            update(RunRow)
            .where(
                RunRow.id == held.id,
                RunRow.lease_token == held.lease_token,
                RunRow.state.in_(_ACTIVE),
            )
            .values(lease_expires_at=expires)
            .returning(RunRow.log_bytes)
        ).first()
        if result is None:
            lost.append(held.id)
        else:
            log_bytes[held.id] = int(result[0])
    return HeartbeatResponse(
        lost=lost,
        cancel=_cancels(sess, agent),
        draining=agent.state == "draining",
        log_bytes=log_bytes,
    )


def _leased_run(sess: Session, who: Principal, run_id: str, token: str) -> RunRow:
    run = sess.execute(
        select(RunRow).where(RunRow.id == run_id, RunRow.lease_token == token)
    ).scalar_one_or_none()
    if run is not None and not (who.is_superuser or run.entity_id in who.roles):
        run = None  # the token is not this caller's to use: same answer as a stale one
    if run is None or not RunState(run.state).is_active:
        raise StaleLeaseError(
            f"the lease on run '{run_id}' is no longer this agent's (it expired and the run "
            "was requeued, or the run ended); stop this copy",
            fields={"run": run_id},
        )
    return run


def report_state(
    sess: Session, who: Principal, run_id: str, report: StateReport
) -> tuple[RunRow, int | None]:
    """Store an agent's report; also returns the agent whose capacity the report updated."""
    run = _leased_run(sess, who, run_id, report.lease_token)
    updated = run.agent_id if report.capacity is not None else None
    current = RunState(run.state)
    if report.state not in AGENT_TRANSITIONS.get(current, frozenset()):
        raise InvalidInputError(
            f"run '{run_id}' cannot go from {current.value} to {report.state.value}",
            fields={"from": current.value, "to": report.state.value},
        )
    if report.capacity is not None and run.agent_id is not None:
        # The lease token proves the caller is the run's agent; the router then wakes
        # that agent's waiting claim, which can hand the freed GPUs on at once.
        agent = sess.get(AgentRow, run.agent_id)
        if agent is not None:
            _update_capacity(agent, report.capacity)
    if report.handle is not None:
        run.handle = report.handle
    if report.gpu_ids is not None:
        run.gpu_ids = list(report.gpu_ids)
    if report.exit_code is not None:
        run.exit_code = report.exit_code
    phase = Phase(report.phase) if report.phase in Phase._value2member_map_ else Phase.AGENT
    if report.state is RunState.PREEMPTED:
        transition(sess, run, RunState.PREEMPTED, report.reason, phase)
        if run.attempt >= MAX_ATTEMPTS:
            transition(
                sess,
                run,
                RunState.FAILED,
                f"preempted {run.attempt} times (last: {report.reason or 'preempted'}); "
                "not requeued again",
                Phase.SERVER,
            )
            run.lease_token = None
            run.lease_expires_at = None
            return run, updated
        _requeue(sess, run, f"requeued after preemption: {report.reason or 'preempted'}")
        return run, updated
    if report.state is current and report.reason is None:
        return run, updated  # a repeated report: nothing new to store
    transition(sess, run, report.state, report.reason, phase)
    if report.state.is_terminal:
        run.lease_token = None
        run.lease_expires_at = None
        run.cancel_requested = False
    return run, updated


def _requeue(sess: Session, run: RunRow, reason: str) -> None:
    run.lease_token = None
    run.lease_expires_at = None
    run.agent_id = None
    run.gpu_ids = []
    run.handle = None
    run.blocked_since = None
    run.queued_at = now()
    if run.cancel_requested:
        transition(
            sess, run, RunState.CANCELLED, "cancelled while its agent was lost", Phase.SERVER
        )
        return
    transition(sess, run, RunState.QUEUED, reason, Phase.SERVER)


def append_logs(sess: Session, who: Principal, run_id: str, chunk: LogAppend) -> int:
    run = _leased_run(sess, who, run_id, chunk.lease_token)
    # A retried upload (or one from before an agent restart) starts before what
    # is stored: skip it, and tell the agent where to resume.
    if chunk.start != run.log_bytes or not chunk.text and chunk.next_offset == run.log_bytes:
        return run.log_bytes
    if chunk.text:
        sess.add(RunLogRow(run_id=run.id, offset=run.log_chars, text=chunk.text, at=now()))
        run.log_chars += len(chunk.text)
    run.log_bytes = chunk.next_offset
    return run.log_bytes


def reap_expired(sess: Session, *, limit: int = 200) -> list[str]:
    """Requeue runs whose agent stopped renewing their lease (crashed after MAX_ATTEMPTS)."""
    at = now()
    rows = list(
        sess.execute(
            select(RunRow)
            .where(RunRow.state.in_(_ACTIVE), RunRow.lease_expires_at < at)
            .limit(limit)
        ).scalars()
    )
    names = Names(sess)
    for run in rows:
        agent = names.of(AgentRow, run.agent_id) or "?"
        if run.attempt >= MAX_ATTEMPTS:
            transition(
                sess,
                run,
                RunState.CRASHED,
                f"lease expired {run.attempt} times (last agent {agent}); not retried again",
                Phase.SERVER,
            )
            run.lease_token = None
            run.lease_expires_at = None
        else:
            _requeue(
                sess,
                run,
                f"agent {agent} stopped renewing its lease (attempt {run.attempt}); requeued",
            )
    return [r.id for r in rows]


def drain(sess: Session, agent: AgentRow) -> AgentRow:
    agent.state = "draining"
    return agent


def stop(sess: Session, agent: AgentRow) -> None:
    agent.state = "stopped"


def to_response(sess: Session, agent: AgentRow, lease_ttl_s: float) -> AgentResponse:
    queues = sess.execute(select(QueueRow.name).where(QueueRow.id.in_(agent.queue_ids))).scalars()
    runs = sess.execute(
        select(RunRow.id).where(RunRow.agent_id == agent.id, RunRow.state.in_(_ACTIVE))
    ).scalars()
    alive = agent.last_seen_at.timestamp() >= now().timestamp() - lease_ttl_s
    state = agent.state if alive or agent.state == "stopped" else "offline"
    entity = sess.get(EntityRow, agent.entity_id)
    return AgentResponse(
        id=agent.id,
        name=agent.name,
        entity=entity.name if entity else "?",
        hostname=agent.hostname,
        state=state,
        queues=list(queues),
        max_jobs=agent.max_jobs,
        gpu_ids=list(agent.gpu_ids),
        gpu_holders=dict(agent.gpu_holders),
        runs=list(runs),
        free_gpus=agent.free_gpus,
        free_slots=agent.free_slots,
        last_seen_at=agent.last_seen_at,
    )


def list_agents(sess: Session, entity: EntityRow) -> list[AgentRow]:
    return list(
        sess.execute(
            select(AgentRow).where(AgentRow.entity_id == entity.id).order_by(AgentRow.name)
        ).scalars()
    )
