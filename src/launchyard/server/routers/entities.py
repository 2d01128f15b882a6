"""Health, identity, entities and their members."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from launchyard.errors import PermissionDeniedError
from launchyard.server import metrics
from launchyard.server.deps import Caller, State
from launchyard.server.schemas.entities import (
    AgentKeyRequest,
    AgentKeyResponse,
    EntityCreateRequest,
    EntityResponse,
    MemberRequest,
    MemberResponse,
    WhoAmIResponse,
)
from launchyard.server.services import entities as service
from launchyard.server.services.queues import get_queue
from launchyard.server.tables import EntityRow

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz(state: State) -> dict[str, str]:
    """Liveness and database reachability; the only call that needs no API key."""
    with state.db.session() as sess:
        sess.execute(EntityRow.__table__.select().limit(1))
    return {"status": "ok"}


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
def prometheus_metrics(state: State, who: Caller) -> PlainTextResponse:
    """Prometheus metrics (server admin's key: they cover every entity)."""
    if not who.is_superuser:
        raise PermissionDeniedError("metrics cover every entity: use the server admin's key")
    return PlainTextResponse(metrics.render(state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/whoami", tags=["entities"])
def whoami(state: State, who: Caller) -> WhoAmIResponse:
    with state.db.session() as sess:
        names = {e.id: e.name for e in service.visible_entities(sess, who)}
    return WhoAmIResponse(
        user=who.name,
        is_superuser=who.is_superuser,
        entities={names[eid]: role.value for eid, role in who.roles.items() if eid in names},
    )


@router.get("/api/v1/entities", tags=["entities"])
def list_entities(state: State, who: Caller) -> list[EntityResponse]:
    with state.db.session() as sess:
        rows = service.visible_entities(sess, who)
        return [
            EntityResponse(name=r.name, role=who.roles[r.id].value if r.id in who.roles else None)
            for r in rows
        ]


@router.post("/api/v1/entities", status_code=201, tags=["entities"])
def create_entity(req: EntityCreateRequest, state: State, who: Caller) -> EntityResponse:
    with state.db.session() as sess:
        row = service.create_entity(sess, who, req.name)
        response = EntityResponse(name=row.name, role=None)
    state.auth_cache.clear()
    return response


@router.post("/api/v1/entities/{entity}/members", status_code=201, tags=["entities"])
def add_member(entity: str, req: MemberRequest, state: State, who: Caller) -> MemberResponse:
    with state.db.session() as sess:
        ent = service.get_entity(sess, entity)
        user, key = service.add_member(sess, who, ent, req.user, req.role)
        response = MemberResponse(user=user.name, entity=ent.name, role=req.role.value, api_key=key)
    state.auth_cache.clear()  # roles changed: identities are re-read
    return response


@router.post("/api/v1/entities/{entity}/agent-keys", status_code=201, tags=["entities"])
def create_agent_key(
    entity: str, req: AgentKeyRequest, state: State, who: Caller
) -> AgentKeyResponse:
    """A key limited to running agents for these queues (for a cluster's agent deployment)."""
    with state.db.session() as sess:
        ent = service.get_entity(sess, entity)
        queues = [get_queue(sess, ent, name) for name in req.queues]
        user, key = service.create_agent_key(sess, who, ent, [q.id for q in queues])
        return AgentKeyResponse(
            user=user.name, entity=ent.name, queues=[q.name for q in queues], api_key=key
        )
