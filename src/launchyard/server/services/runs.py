"""Runs: submission (validate, render, record the job), reads, cancel, logs.

Only services change a run's state; every change goes through
:func:`transition`, which stores the time, the reason and the phase.
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, and_, func, insert, inspect, or_, select
from sqlalchemy.orm import Session

from launchyard import templating
from launchyard.backends import get_backend_class
from launchyard.errors import InvalidInputError, NotFoundError
from launchyard.models import secrets as config_secrets
from launchyard.models.durations import parse_duration
from launchyard.models.resources import Resource
from launchyard.models.runs import Phase, Priority, RunState
from launchyard.scheduling import AgentView, explain_wait
from launchyard.server import metrics
from launchyard.server.schemas.runs import (
    LogsResponse,
    RunResponse,
    RunSubmitRequest,
    TransitionResponse,
)
from launchyard.server.services import jobs as jobs_service
from launchyard.server.services.auth import Principal, Role, now
from launchyard.server.services.entities import get_entity, get_or_create_project, get_project
from launchyard.server.services.queues import get_queue, parsed_config
from launchyard.server.tables import (
    AgentRow,
    EntityRow,
    JobRow,
    ProjectRow,
    QueueRow,
    RunLogRow,
    RunRow,
    RunTransitionRow,
    UserRow,
)

_ID_ALPHABET = string.ascii_lowercase + string.digits
_Row = TypeVar("_Row", EntityRow, ProjectRow)
LOG_PAGE_CHARS = 1_000_000


def new_run_id() -> str:
    # Starts with a letter so it is a valid DNS-1123 label and container name.
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(_ID_ALPHABET) for _ in range(9)
    )


def _track_deadline(run: RunRow, state: RunState, at: datetime) -> None:
    """The latest the current attempt can end: what the scheduler plans backfill with.

    Set provisionally at the claim and again when the run is running (the agent counts
    the limit from there); cleared when the attempt is over."""
    if run.time_limit_s is None:
        return
    if state in (RunState.CLAIMED, RunState.RUNNING):
        run.deadline_at = at + timedelta(seconds=run.time_limit_s)
    elif not state.is_active:
        run.deadline_at = None


def transition(
    sess: Session, run: RunRow, state: RunState, reason: str | None, phase: Phase
) -> None:
    sess.add(RunTransitionRow(**_change(run, state, reason, phase)))


def _change(run: RunRow, state: RunState, reason: str | None, phase: Phase) -> dict[str, Any]:
    """Apply a state change to ``run``; returns the values of its transition row."""
    at = now()
    run.state = state.value
    if reason is not None or state.is_terminal:
        run.reason = reason
    if state is RunState.RUNNING and run.started_at is None:
        run.started_at = at
    if state.is_terminal:
        run.ended_at = at
    _track_deadline(run, state, at)
    metrics.observe(state.value, at, run.queued_at, run.created_at)
    return {
        "run_id": run.id,
        "state": state.value,
        "at": at,
        "reason": reason,
        "phase": phase.value,
        "attempt": run.attempt,
    }


def _check_env(run_env: dict[str, str], queue_env: dict[str, Any]) -> None:
    for key in run_env:
        if key.startswith("LAUNCHYARD_"):
            raise InvalidInputError(
                f"env {key}: names starting with LAUNCHYARD_ are set by launchyard itself",
                fields={"field": "env", "value": key},
            )
        if key in queue_env:
            raise InvalidInputError(
                f"env {key}: the queue's config sets it and a run may not change it; "
                "ask a queue admin or use another name",
                fields={"field": "env", "value": key},
            )


def submit(
    sess: Session,
    who: Principal,
    entity: EntityRow,
    req: RunSubmitRequest,
    names: Names | None = None,
    known: KnownRows | None = None,
) -> RunRow:
    """Validate, render and queue one run. ``names`` learns what the response will show;
    ``known`` saves the project's lookup."""
    who.require(entity, Role.MEMBER, "launching a run")
    if req.idempotency_key:
        existing = sess.execute(
            select(RunRow).where(RunRow.idempotency_key == f"{entity.id}:{req.idempotency_key}")
        ).scalar_one_or_none()
        if existing is not None:
            return existing
    queue = get_queue(sess, entity, req.queue)
    project = (known or KnownRows()).project(sess, entity, req.project)

    image, command, env = req.image, list(req.command or []), dict(req.env)
    values, run_config = dict(req.values), dict(req.config or {})
    time_limit = req.time_limit
    job: JobRow | None = None
    job_version: int | None = None
    if req.job:
        job, version = jobs_service.resolve(sess, project, jobs_service.parse_ref(req.job))
        job_version = version.version
        spec = version.spec
        image = image or spec.get("image")
        command = command or list(spec.get("command") or [])
        env = {**spec.get("env", {}), **env}
        values = {**spec.get("values", {}), **values}
        run_config = {**spec.get("config", {}), **run_config}
        time_limit = time_limit if time_limit is not None else spec.get("time_limit")
    time_limit_s = None if time_limit is None else parse_duration(time_limit)

    resource = Resource(queue.resource)
    if resource in (Resource.LOCAL, Resource.SLURM, Resource.RAY) and not command:
        raise InvalidInputError(
            f"queue '{queue.name}' runs commands (resource {resource.value}): give the command "
            "after `--`, e.g. `launchyard launch -q QUEUE -- python train.py`"
            + (f"; image {image!r} needs a docker or kubernetes queue" if image else ""),
            fields={"field": "command"},
        )
    priority = req.priority or Priority.MEDIUM
    if req.priority not in (None, Priority.MEDIUM) and not queue.priority_enabled:
        raise InvalidInputError(
            f"queue '{queue.name}' does not enable priorities; drop --priority or ask an admin "
            "to set `priority: enabled` on the queue",
            fields={"field": "priority", "value": priority.value},
        )

    run_id = new_run_id()
    name = req.name or run_id
    resolved_values = templating.resolve_values(queue.variables, values, queue=queue.name)
    macros = {
        "image_uri": image,
        "project_name": project.name,
        "entity_name": entity.name,
        "run_id": run_id,
        "run_name": name,
        "queue_name": queue.name,
        "author": who.name,
    }
    tree = parsed_config(queue.config_text)
    pinned = tree.get("image")
    if (
        resource is Resource.DOCKER
        and not image
        and not (isinstance(pinned, str) and "${" not in pinned)
    ):
        raise InvalidInputError(
            f"queue '{queue.name}' runs containers (resource docker): give an image with "
            "-d IMAGE, e.g. `launchyard launch -q QUEUE -d python:3.11 -- python train.py`",
            fields={"field": "image"},
        )
    rendered = templating.render(tree, resolved_values, macros)
    if not isinstance(rendered, dict):  # parse_config guarantees a mapping
        raise InvalidInputError("the queue's config must render to a mapping")
    backend = get_backend_class(resource.value)
    backend.check_config(config_secrets.unwrap(rendered))
    gpus = backend.gpu_demand(config_secrets.unwrap(rendered))
    queue_env = rendered.get("env") or {}
    _check_env(env, queue_env)

    if job is None:
        job_name = req.job_name or jobs_service.derive_name(image, command)
        spec = {
            "image": image,
            "command": command,
            "env": env,
            "config": run_config,
            "values": dict(req.values),
        }
        if time_limit_s is not None:  # only when set: older versions keep their digests
            spec["time_limit"] = time_limit_s
        version = jobs_service.record(sess, project, job_name, spec)
        job_id, job_version = version.job_id, version.version
    else:
        job_id, job_name = job.id, job.name
    if names is not None:
        for table, row_id, label in (
            (EntityRow, entity.id, entity.name),
            (ProjectRow, project.id, project.name),
            (QueueRow, queue.id, queue.name),
            (JobRow, job_id, job_name),
            (UserRow, who.user_id, who.name),
        ):
            names.remember(table, row_id, label)

    at = now()
    run = RunRow(
        id=run_id,
        name=name,
        entity_id=entity.id,
        project_id=project.id,
        queue_id=queue.id,
        job_id=job_id,
        job_version=job_version,
        author_id=who.user_id,
        state=RunState.QUEUED.value,
        priority_rank=priority.rank,
        image=image,
        command=command,
        env=env,
        values=resolved_values,
        run_config=run_config,
        resolved_config=rendered,
        gpus=gpus,
        time_limit_s=time_limit_s,
        attempt=0,
        queued_at=at,
        created_at=at,
        gpu_ids=[],
        log_bytes=0,
        log_chars=0,
        cancel_requested=False,
        idempotency_key=f"{entity.id}:{req.idempotency_key}" if req.idempotency_key else None,
    )
    queued = _change(run, RunState.QUEUED, f"submitted by {who.name}", Phase.SERVER)
    _insert(sess, run, queued)
    return run


_RUN_COLUMNS = [c.key for c in RunRow.__table__.columns if c.key != "seq"]
# Built once; the values come as execute() parameters, so SQLAlchemy's compiled cache serves
# every submit (a .values() clause built per call cost more than the INSERT itself).
_INSERT_RUN = insert(cast(Table, RunRow.__table__)).returning(RunRow.__table__.c.seq)
_INSERT_TRANSITION = insert(cast(Table, RunTransitionRow.__table__))


def _insert(sess: Session, run: RunRow, first: dict[str, Any]) -> None:
    """INSERT a new run and its first transition as two Core statements: on the submit path
    the ORM's unit of work cost more CPU than the statements themselves. ``run`` stays out
    of the session: it answers the request, and a later query loads the stored row."""
    # Only what was set: an unset JSON column must stay SQL NULL, not become JSON 'null'.
    given = inspect(run).dict
    run.seq = sess.execute(
        _INSERT_RUN, {key: given[key] for key in _RUN_COLUMNS if key in given}
    ).scalar_one()
    sess.execute(_INSERT_TRANSITION, first)


def get_run(sess: Session, who: Principal, run_id: str, role: Role = Role.VIEWER) -> RunRow:
    run = sess.execute(select(RunRow).where(RunRow.id == run_id)).scalar_one_or_none()
    if run is None or not (who.is_superuser or run.entity_id in who.roles):
        # The same answer for "not yours" as for "absent": ids are not enumerable.
        raise NotFoundError(f"run '{run_id}' does not exist", fields={"run": run_id})
    entity = sess.get(EntityRow, run.entity_id)
    assert entity is not None
    who.require(entity, role, "this action on a run")
    return run


def cancel(sess: Session, who: Principal, run: RunRow) -> RunRow:
    if RunState(run.state).is_terminal:
        return run
    if run.state == RunState.QUEUED.value:
        transition(
            sess, run, RunState.CANCELLED, f"cancelled by {who.name} while queued", Phase.SERVER
        )
    else:
        run.cancel_requested = True  # the agent stops it and reports `cancelled`
    return run


def list_runs(
    sess: Session,
    entity: EntityRow,
    *,
    queue: QueueRow | None = None,
    project: ProjectRow | None = None,
    states: list[RunState] | None = None,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[RunRow], int | None]:
    """Newest first, paged by `seq` (a cursor: fast at any depth)."""
    query = select(RunRow).where(RunRow.entity_id == entity.id)
    if queue is not None:
        query = query.where(RunRow.queue_id == queue.id)
    if project is not None:
        query = query.where(RunRow.project_id == project.id)
    if states:
        query = query.where(RunRow.state.in_([s.value for s in states]))
    if before is not None:
        query = query.where(RunRow.seq < before)
    rows = list(sess.execute(query.order_by(RunRow.seq.desc()).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


def queue_position(sess: Session, run: RunRow) -> int:
    ahead = sess.execute(
        select(func.count())
        .select_from(RunRow)
        .where(
            RunRow.queue_id == run.queue_id,
            RunRow.state == RunState.QUEUED.value,
            or_(
                RunRow.priority_rank < run.priority_rank,
                and_(RunRow.priority_rank == run.priority_rank, RunRow.seq < run.seq),
            ),
        )
    ).scalar_one()
    return int(ahead) + 1


def agent_views(sess: Session, queue_id: int, lease_ttl_s: float) -> list[AgentView]:
    rows = sess.execute(select(AgentRow)).scalars()
    cutoff = now().timestamp() - lease_ttl_s
    return [
        AgentView(
            name=a.name,
            alive=a.state != "stopped" and a.last_seen_at.timestamp() >= cutoff,
            draining=a.state == "draining",
            free_gpus=a.free_gpus,
            total_gpus=len(a.gpu_ids),
            free_slots=a.free_slots,
        )
        for a in rows
        if queue_id in a.queue_ids
    ]


def behind_reservation(
    sess: Session, run: RunRow, agents: list[AgentView], reserve_after_s: float
) -> str | None:
    """Say so when the head of the queue holds a GPU reservation that this run waits behind."""
    head = sess.execute(
        select(RunRow)
        .where(RunRow.queue_id == run.queue_id, RunRow.state == RunState.QUEUED.value)
        .order_by(RunRow.priority_rank, RunRow.seq)
        .limit(1)
    ).scalar_one_or_none()
    serving = [a for a in agents if a.alive and not a.draining]
    if head is None or head.id == run.id or not serving:
        return None
    most_free = max(a.free_gpus for a in serving)
    fits_somewhere = any(head.gpus <= a.total_gpus for a in serving)
    if head.blocked_since is None:
        return None
    waited = now().timestamp() - head.blocked_since.timestamp()
    if fits_somewhere and head.gpus > most_free and waited >= reserve_after_s:
        return (
            f"reserved for a bigger run: {head.id} needs {head.gpus} GPUs and holds a "
            "reservation, so smaller runs wait behind it unless their time limits end "
            "before it can start"
        )
    return None


class KnownRows:
    """Entities and projects by name, kept for the life of the process.

    Neither is ever renamed or deleted, so a row once committed stays right, here and in
    sibling processes; only committed rows are kept, as plain copies that belong to no
    session. Queues are read every time: their config changes."""

    MAX_ROWS = 10_000

    def __init__(self) -> None:
        self._entities: dict[str, EntityRow] = {}
        self._projects: dict[tuple[int, str], ProjectRow] = {}

    def entity(self, sess: Session, name: str) -> EntityRow:
        row = self._entities.get(name)
        if row is None:
            row = self._entities[name] = _copy(get_entity(sess, name))
            self._bound(self._entities)
        return row

    def project(self, sess: Session, entity: EntityRow, name: str) -> ProjectRow:
        row = self._projects.get((entity.id, name))
        if row is not None:
            return row
        try:
            row = get_project(sess, entity, name)
        except NotFoundError:
            return get_or_create_project(sess, entity, name)  # not committed yet: not kept
        self._projects[(entity.id, name)] = row = _copy(row)
        self._bound(self._projects)
        return row

    def _bound(self, rows: dict[Any, Any]) -> None:
        if len(rows) > self.MAX_ROWS:
            rows.clear()


def _copy(row: _Row) -> _Row:
    """A copy in no session: a rollback in the session that loaded ``row`` expires it."""
    return type(row)(**{c.key: getattr(row, c.key) for c in row.__table__.columns})


class Names:
    """Caches id → name lookups while building many responses."""

    def __init__(self, sess: Session) -> None:
        self.sess = sess
        self._cache: dict[tuple[type[Any], int], str] = {}

    def remember(self, table: type[Any], row_id: int, name: str) -> None:
        self._cache[(table, row_id)] = name

    def of(self, table: type[Any], row_id: int | None) -> str | None:
        if row_id is None:
            return None
        key = (table, row_id)
        if key not in self._cache:
            row = self.sess.get(table, row_id)
            self._cache[key] = row.name if row is not None else "?"
        return self._cache[key]


def to_response(
    sess: Session,
    run: RunRow,
    names: Names | None = None,
    *,
    detail: bool = True,
    lease_ttl_s: float = 30.0,
    reserve_after_s: float = 30.0,
) -> RunResponse:
    names = names or Names(sess)
    transitions: list[TransitionResponse] = []
    position = waiting = None
    if detail:
        rows = sess.execute(
            select(RunTransitionRow)
            .where(RunTransitionRow.run_id == run.id)
            .order_by(RunTransitionRow.id)
        ).scalars()
        transitions = [
            TransitionResponse(
                state=t.state, at=t.at, reason=t.reason, phase=t.phase, attempt=t.attempt
            )
            for t in rows
        ]
        if run.state == RunState.QUEUED.value:
            position = queue_position(sess, run)
            agents = agent_views(sess, run.queue_id, lease_ttl_s)
            waiting = explain_wait(run.gpus, agents)
            if position > 1:
                waiting = behind_reservation(sess, run, agents, reserve_after_s) or waiting
    return RunResponse(
        id=run.id,
        name=run.name,
        entity=names.of(EntityRow, run.entity_id) or "?",
        project=names.of(ProjectRow, run.project_id) or "?",
        queue=names.of(QueueRow, run.queue_id) or "?",
        state=run.state,
        priority=Priority.from_rank(run.priority_rank).value,
        job=names.of(JobRow, run.job_id),
        job_version=f"v{run.job_version}" if run.job_version is not None else None,
        image=run.image,
        command=list(run.command),
        env=dict(run.env),
        values=dict(run.values),
        config=dict(run.run_config),
        resolved_config=config_secrets.mask(run.resolved_config),
        gpus=run.gpus,
        gpu_ids=list(run.gpu_ids),
        time_limit_s=run.time_limit_s,
        deadline_at=run.deadline_at,
        attempt=run.attempt,
        author=names.of(UserRow, run.author_id) or "?",
        agent=names.of(AgentRow, run.agent_id),
        exit_code=run.exit_code,
        reason=run.reason,
        position=position,
        waiting_reason=waiting,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        transitions=transitions,
    )


def read_logs(sess: Session, run: RunRow, offset: int) -> LogsResponse:
    """Log text from character ``offset`` on (at most about a megabyte per call)."""
    chunks = list(
        sess.execute(
            select(RunLogRow)
            .where(
                RunLogRow.run_id == run.id, RunLogRow.offset + func.length(RunLogRow.text) > offset
            )
            .order_by(RunLogRow.offset)
            .limit(1000)
        ).scalars()
    )
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        piece = chunk.text[max(offset - chunk.offset, 0) :]
        parts.append(piece)
        size += len(piece)
        if size >= LOG_PAGE_CHARS:
            break
    text = "".join(parts)
    next_offset = offset + len(text)
    done = RunState(run.state).is_terminal and next_offset >= run.log_chars
    return LogsResponse(text=text, offset=offset, next_offset=next_offset, done=done)


def parse_states(raw: list[str] | None) -> list[RunState] | None:
    if not raw:
        return None
    out = []
    for item in raw:
        for part in item.split(","):
            try:
                out.append(RunState(part.strip()))
            except ValueError:
                raise InvalidInputError(
                    f"state {part!r} is not a run state; use one of: "
                    + ", ".join(s.value for s in RunState),
                    fields={"field": "state", "value": part},
                ) from None
    return out
