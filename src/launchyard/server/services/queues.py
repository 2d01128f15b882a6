"""Queues: a resource, a config template with typed variables, and who may change them."""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from launchyard import templating
from launchyard.backends import get_backend_class, known_resources
from launchyard.errors import ConflictError, InvalidInputError, NotFoundError
from launchyard.models import secrets
from launchyard.models.resources import Resource
from launchyard.server.services.auth import Principal, Role, now
from launchyard.server.services.entities import check_name
from launchyard.server.tables import EntityRow, QueueRow, RunRow


def get_queue(sess: Session, entity: EntityRow, name: str) -> QueueRow:
    row = sess.execute(
        select(QueueRow).where(QueueRow.entity_id == entity.id, QueueRow.name == name)
    ).scalar_one_or_none()
    if row is None:
        known = (
            sess.execute(
                select(QueueRow.name).where(QueueRow.entity_id == entity.id).order_by(QueueRow.name)
            )
            .scalars()
            .all()
        )
        raise NotFoundError(
            f"queue '{name}' does not exist in entity '{entity.name}'; "
            f"queues: {', '.join(known) or 'none (create one with `launchyard queue create`)'}",
            fields={"queue": name, "entity": entity.name},
        )
    return row


def list_queues(sess: Session, entity: EntityRow) -> list[QueueRow]:
    return list(
        sess.execute(
            select(QueueRow).where(QueueRow.entity_id == entity.id).order_by(QueueRow.name)
        ).scalars()
    )


def state_counts(sess: Session, queue_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {qid: {} for qid in queue_ids}
    if not queue_ids:
        return counts
    rows = sess.execute(
        select(RunRow.queue_id, RunRow.state, func.count())
        .where(RunRow.queue_id.in_(queue_ids))
        .group_by(RunRow.queue_id, RunRow.state)
    )
    for queue_id, state, n in rows:
        counts[queue_id][state] = n
    return counts


@functools.lru_cache(maxsize=512)
def parsed_config(text: str) -> dict[str, Any]:
    """A queue's template, parsed once per text (submissions render many runs of one queue).

    Callers must not mutate the result: ``templating.render`` builds a new tree.
    """
    return templating.parse_config(text)


def config_text(config: Any) -> str:
    """Keep the admin's text verbatim; a mapping sent over the API is stored as JSON."""
    if isinstance(config, str):
        return config
    if config is None:
        return ""
    return json.dumps(config, indent=2)


def parse_resource(value: str) -> Resource:
    try:
        resource = Resource(value)
    except ValueError:
        raise InvalidInputError(
            f"resource {value!r} is not known; use one of: " + ", ".join(r.value for r in Resource),
            fields={"field": "resource", "value": value},
        ) from None
    if resource.value not in known_resources():
        raise InvalidInputError(
            f"resource '{value}' has no backend in this launchyard release; "
            f"supported: {', '.join(known_resources())}",
            fields={"field": "resource", "value": value},
        )
    return resource


def validate(resource: Resource, text: str, variables_raw: Any) -> dict[str, Any]:
    """Check a queue definition; returns the normalised variable declarations."""
    tree = templating.parse_config(text)
    variables = templating.parse_variables(variables_raw)
    templating.check_template(tree, variables)
    get_backend_class(resource.value).check_config(secrets.unwrap(tree))
    return variables


def create_queue(
    sess: Session,
    who: Principal,
    entity: EntityRow,
    *,
    name: str,
    resource: str,
    config: Any,
    variables: Any,
    priority_enabled: bool,
) -> QueueRow:
    who.require(entity, Role.ADMIN, "creating a queue")
    check_name("queue", name)
    res = parse_resource(resource)
    text = config_text(config)
    declared = validate(res, text, variables)
    exists = sess.execute(
        select(QueueRow.id).where(QueueRow.entity_id == entity.id, QueueRow.name == name)
    ).first()
    if exists:
        raise ConflictError(
            f"queue '{name}' already exists in entity '{entity.name}'; "
            "change it with `launchyard queue update`",
            fields={"queue": name},
        )
    row = QueueRow(
        entity_id=entity.id,
        name=name,
        resource=res.value,
        config_text=text,
        variables=declared,
        priority_enabled=priority_enabled,
        created_at=now(),
        updated_at=now(),
    )
    sess.add(row)
    sess.flush()
    return row


def update_queue(
    sess: Session,
    who: Principal,
    entity: EntityRow,
    queue: QueueRow,
    *,
    config: Any = None,
    variables: Any = None,
    priority_enabled: bool | None = None,
) -> QueueRow:
    """Change a queue. Queued runs keep the config they were rendered with."""
    who.require(entity, Role.ADMIN, "changing a queue")
    text = config_text(config) if config is not None else queue.config_text
    raw_vars = variables if variables is not None else queue.variables
    declared = validate(Resource(queue.resource), text, raw_vars)
    queue.config_text = text
    queue.variables = declared
    if priority_enabled is not None:
        queue.priority_enabled = priority_enabled
    queue.updated_at = now()
    return queue


def delete_queue(sess: Session, who: Principal, entity: EntityRow, queue: QueueRow) -> None:
    who.require(entity, Role.ADMIN, "deleting a queue")
    active = sess.execute(
        select(func.count())
        .select_from(RunRow)
        .where(RunRow.queue_id == queue.id, RunRow.state.in_(["claimed", "starting", "running"]))
    ).scalar_one()
    if active:
        raise ConflictError(
            f"queue '{queue.name}' has {active} run(s) in flight; cancel them or wait, "
            "then delete it",
            fields={"queue": queue.name, "active_runs": active},
        )
    sess.delete(queue)
