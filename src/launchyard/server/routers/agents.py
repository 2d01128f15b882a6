"""The agent protocol: register, claim (long poll), heartbeat, report, upload logs, drain."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from launchyard.server.deps import Caller, State
from launchyard.server.notify import Topic, agent_topic, claimable, run_topic
from launchyard.server.schemas.agents import (
    AgentRegisterRequest,
    AgentRegisterResponse,
    AgentResponse,
    ClaimRequest,
    ClaimResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    LogAppend,
    LogAppendResponse,
    StateReport,
)
from launchyard.server.services import agents as service
from launchyard.server.services.auth import Role
from launchyard.server.services.entities import get_entity

router = APIRouter(prefix="/api/v1", tags=["agents"])

# Ids are database integers: anything past 63 bits cannot exist (and SQLite refuses it).
AgentId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("/entities/{entity}/agents", status_code=201)
def register(
    entity: str, req: AgentRegisterRequest, state: State, who: Caller
) -> AgentRegisterResponse:
    with state.db.session() as sess:
        agent, queues = service.register(
            sess, who, get_entity(sess, entity), req, state.settings.lease_ttl_s
        )
        return AgentRegisterResponse(
            id=agent.id, name=agent.name, lease_ttl_s=state.settings.lease_ttl_s, queues=queues
        )


@router.get("/entities/{entity}/agents")
def list_agents(entity: str, state: State, who: Caller) -> list[AgentResponse]:
    with state.db.session() as sess:
        ent = get_entity(sess, entity)
        who.require(ent, Role.VIEWER, "listing agents")
        return [
            service.to_response(sess, a, state.settings.lease_ttl_s)
            for a in service.list_agents(sess, ent)
        ]


@router.post("/agents/{agent_id}/claim")
async def claim(agent_id: AgentId, req: ClaimRequest, state: State, who: Caller) -> ClaimResponse:
    """Runs that fit the agent's free capacity, plus cancels for runs it holds.

    With nothing to hand out the call waits (up to ``wait_s``) and answers the
    moment a run is submitted, cancelled, or the agent reports freed capacity.
    """
    settings = state.settings

    def attempt(first: bool) -> tuple[ClaimResponse, frozenset[Topic] | None]:
        with state.db.session() as sess:
            agent = service.get_agent(sess, who, agent_id)
            result = service.claim(
                sess,
                agent,
                req.capacity if first else None,
                lease_ttl_s=settings.lease_ttl_s,
                reserve_after_s=settings.reserve_after_s,
                is_postgres=state.db.is_postgres,
            )
            if result.runs or result.cancel or result.draining:
                return result, None  # answered now: nothing to wait for
            return result, service.wake_topics(sess, agent)

    deadline = time.monotonic() + min(req.wait_s, settings.lease_ttl_s / 2)
    first = True
    while True:
        version = state.notifier.version
        result, topics = await run_in_threadpool(attempt, first)
        first = False
        remaining = deadline - time.monotonic()
        if topics is None or remaining <= 0:
            return result
        await state.notifier.wait(version, remaining, topics)


@router.post("/agents/{agent_id}/heartbeat")
def heartbeat(
    agent_id: AgentId, req: HeartbeatRequest, state: State, who: Caller
) -> HeartbeatResponse:
    with state.db.session() as sess:
        agent = service.get_agent(sess, who, agent_id)
        response = service.heartbeat(sess, agent, req, lease_ttl_s=state.settings.lease_ttl_s)
    state.notifier.notify(agent_topic(agent_id))  # capacity may have freed: wake its claim
    return response


@router.post("/agents/{agent_id}/drain")
def drain(agent_id: AgentId, state: State, who: Caller) -> AgentResponse:
    with state.db.session() as sess:
        agent = service.drain(sess, service.get_agent(sess, who, agent_id))
        response = service.to_response(sess, agent, state.settings.lease_ttl_s)
    state.notifier.notify(agent_topic(agent_id))
    return response


@router.post("/agents/{agent_id}/stop", status_code=204)
def stop(agent_id: AgentId, state: State, who: Caller) -> None:
    """An agent says goodbye on a clean shutdown, so it is not shown as offline."""
    with state.db.session() as sess:
        service.stop(sess, service.get_agent(sess, who, agent_id))


@router.post("/runs/{run_id}/state", tags=["runs"])
def report_state(run_id: str, req: StateReport, state: State, who: Caller) -> dict[str, str]:
    with state.db.session() as sess:
        run, freed_by = service.report_state(sess, who, run_id, req)
        new_state = run.state
    # Any report wakes the run's followers; an end report with the agent's capacity wakes
    # its waiting claim; a preempted run is queued again (wake its queue's claims).
    state.notifier.notify(
        run_topic(run_id),
        *([agent_topic(freed_by)] if freed_by is not None else []),
        *(claimable(run.queue_id, run.gpus) if new_state == "queued" else ()),
    )
    return {"state": new_state}


@router.post("/runs/{run_id}/logs", tags=["runs"])
def append_logs(run_id: str, req: LogAppend, state: State, who: Caller) -> LogAppendResponse:
    with state.db.session() as sess:
        log_bytes = service.append_logs(sess, who, run_id, req)
    state.notifier.notify(run_topic(run_id))
    return LogAppendResponse(log_bytes=log_bytes)
