"""API models for agents: registration, claims, heartbeats and reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from launchyard.models.runs import RunState


class AgentRegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    hostname: str
    queues: list[str] = Field(min_length=1)
    max_jobs: int = Field(ge=1, le=10_000)
    gpu_ids: list[Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=list, max_length=1024
    )
    resources: list[str] = Field(default_factory=lambda: ["local"])
    """Resources this agent has a backend for; a queue of another kind is refused."""


class QueueRef(BaseModel):
    id: int
    name: str
    resource: str


class AgentRegisterResponse(BaseModel):
    id: int
    name: str
    lease_ttl_s: float
    queues: list[QueueRef]


class Capacity(BaseModel):
    seq: int = Field(ge=0, le=2**63 - 1)
    free_gpus: int = Field(ge=0, le=1_000_000)
    free_slots: int = Field(ge=0, le=1_000_000)
    gpu_holders: dict[str, str] = Field(default_factory=dict)


class ClaimRequest(BaseModel):
    capacity: Capacity
    wait_s: float = Field(default=20.0, ge=0, le=60)


class ClaimedRun(BaseModel):
    id: str
    attempt: int
    lease_token: str
    entity: str
    project: str
    queue: str
    resource: str
    image: str | None
    command: list[str]
    env: dict[str, str]
    gpus: int
    resolved_config: dict[str, Any]
    run_config: dict[str, Any]
    values: dict[str, Any]
    log_bytes: int
    output_token: str
    """Lets the run (``launchyard.save``) and the agent upload this run's outputs, nothing else."""
    time_limit_s: float | None = None
    """The agent stops the attempt once it has run this long (from ``running``)."""


class ClaimResponse(BaseModel):
    runs: list[ClaimedRun]
    cancel: list[str]
    draining: bool


class HeldRun(BaseModel):
    id: str
    lease_token: str


class HeartbeatRequest(BaseModel):
    runs: list[HeldRun] = Field(default_factory=list)
    capacity: Capacity


class HeartbeatResponse(BaseModel):
    lost: list[str]
    """Runs whose lease this agent no longer holds: stop them, report nothing more."""
    cancel: list[str]
    draining: bool
    log_bytes: dict[str, int] = Field(default_factory=dict)


class StateReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lease_token: str
    state: RunState
    reason: str | None = None
    phase: str = "agent"
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    handle: dict[str, Any] | None = None
    gpu_ids: list[Annotated[int, Field(ge=0, le=1_000_000)]] | None = Field(
        default=None, max_length=1024
    )
    capacity: Capacity | None = None
    """The agent's capacity after this report (an end frees its GPUs and slot): applied like a
    heartbeat's, so the freed capacity is claimable without one."""


class LogAppend(BaseModel):
    lease_token: str
    start: int = Field(ge=0, le=2**63 - 1, description="backend offset this text starts at")
    next_offset: int = Field(ge=0, le=2**63 - 1)
    text: str


class LogAppendResponse(BaseModel):
    log_bytes: int


class AgentResponse(BaseModel):
    id: int
    name: str
    entity: str
    hostname: str
    state: str
    queues: list[str]
    max_jobs: int
    gpu_ids: list[int]
    gpu_holders: dict[str, str]
    runs: list[str]
    free_gpus: int
    free_slots: int
    last_seen_at: datetime
