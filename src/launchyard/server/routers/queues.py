"""Queues: create, list, show, update, delete, and "Parse configuration"."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from launchyard import templating
from launchyard.models import secrets
from launchyard.server.deps import Caller, State
from launchyard.server.schemas.queues import (
    ParseRequest,
    ParseResponse,
    QueueCreateRequest,
    QueueResponse,
    QueueUpdateRequest,
)
from launchyard.server.services import queues as service
from launchyard.server.services.auth import Principal, Role
from launchyard.server.services.entities import get_entity
from launchyard.server.tables import EntityRow, QueueRow

router = APIRouter(prefix="/api/v1", tags=["queues"])


def _response(sess: Session, entity: EntityRow, row: QueueRow) -> QueueResponse:
    counts = service.state_counts(sess, [row.id])[row.id]
    parsed = service.parsed_config(row.config_text)
    return QueueResponse(
        entity=entity.name,
        name=row.name,
        resource=row.resource,
        config=secrets.mask_text(row.config_text, secrets.values(parsed)),
        config_parsed=secrets.mask(parsed),
        variables=row.variables,
        priority=row.priority_enabled,
        counts=counts,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _entity(sess: Session, who: Principal, name: str) -> EntityRow:
    entity = get_entity(sess, name)
    who.require(entity, Role.VIEWER, "reading queues")
    return entity


@router.post("/templates/parse")
def parse(req: ParseRequest, who: Caller) -> ParseResponse:
    """List the variables and macros a config template uses (the "Parse configuration" step)."""
    tree = templating.parse_config(service.config_text(req.config))
    declared = templating.parse_variables(req.variables)
    found = templating.find_placeholders(tree)
    # Unknown macros are refused here too, so the editor shows the error early.
    templating.check_template(
        tree, {**{v: {"schema": {"type": "string"}} for v in found.variables}, **declared}
    )
    return ParseResponse(
        variables=list(found.variables),
        macros=list(found.macros),
        undeclared=[v for v in found.variables if v not in declared],
        config=secrets.mask(tree),
    )


@router.get("/entities/{entity}/queues")
def list_queues(entity: str, state: State, who: Caller) -> list[QueueResponse]:
    with state.db.session() as sess:
        ent = _entity(sess, who, entity)
        return [_response(sess, ent, q) for q in service.list_queues(sess, ent)]


@router.post("/entities/{entity}/queues", status_code=201)
def create_queue(entity: str, req: QueueCreateRequest, state: State, who: Caller) -> QueueResponse:
    with state.db.session() as sess:
        ent = get_entity(sess, entity)
        row = service.create_queue(
            sess,
            who,
            ent,
            name=req.name,
            resource=req.resource,
            config=req.config,
            variables=req.variables,
            priority_enabled=req.priority,
        )
        return _response(sess, ent, row)


@router.get("/entities/{entity}/queues/{name}")
def show_queue(entity: str, name: str, state: State, who: Caller) -> QueueResponse:
    with state.db.session() as sess:
        ent = _entity(sess, who, entity)
        return _response(sess, ent, service.get_queue(sess, ent, name))


@router.patch("/entities/{entity}/queues/{name}")
def update_queue(
    entity: str, name: str, req: QueueUpdateRequest, state: State, who: Caller
) -> QueueResponse:
    with state.db.session() as sess:
        ent = get_entity(sess, entity)
        row = service.update_queue(
            sess,
            who,
            ent,
            service.get_queue(sess, ent, name),
            config=req.config,
            variables=req.variables,
            priority_enabled=req.priority,
        )
        return _response(sess, ent, row)


@router.delete("/entities/{entity}/queues/{name}", status_code=204)
def delete_queue(entity: str, name: str, state: State, who: Caller) -> Response:
    with state.db.session() as sess:
        ent = get_entity(sess, entity)
        service.delete_queue(sess, who, ent, service.get_queue(sess, ent, name))
    return Response(status_code=204)
