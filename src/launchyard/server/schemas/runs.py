"""API models for runs, their transitions and logs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from launchyard.models.runs import Priority


class RunSubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str
    project: str = "uncategorized"
    image: str | None = None
    command: list[str] | None = None
    job: str | None = Field(default=None, description="NAME, NAME:ALIAS or NAME:vN")
    job_name: str | None = Field(default=None, description="name of the job this run records")
    values: dict[str, Any] = Field(default_factory=dict, description="template variables")
    config: dict[str, Any] | None = Field(default=None, description="the run's own config")
    env: dict[str, str] = Field(default_factory=dict)
    priority: Priority | None = None
    time_limit: float | str | None = Field(
        default=None,
        description="stop the run after this long (90, '90s', '5m', '1h30m', '1:30:00'); "
        "the scheduler also plans backfill with it",
    )
    name: str | None = None
    idempotency_key: str | None = Field(default=None, max_length=200)


class RunBatchRequest(BaseModel):
    """Many runs in one request and one transaction (sweeps): all are queued, or none."""

    model_config = ConfigDict(extra="forbid")
    runs: list[RunSubmitRequest] = Field(min_length=1, max_length=5000)


class TransitionResponse(BaseModel):
    state: str
    at: datetime
    reason: str | None
    phase: str
    attempt: int


class RunResponse(BaseModel):
    id: str
    name: str
    entity: str
    project: str
    queue: str
    state: str
    priority: str
    job: str | None
    job_version: str | None
    image: str | None
    command: list[str]
    env: dict[str, str]
    values: dict[str, Any]
    config: dict[str, Any]
    resolved_config: dict[str, Any]
    gpus: int
    gpu_ids: list[int]
    time_limit_s: float | None = None
    deadline_at: datetime | None = None
    """The current attempt is stopped at this time at the latest."""
    attempt: int
    author: str
    agent: str | None
    exit_code: int | None
    reason: str | None
    position: int | None = None
    """1-based place in its queue while queued."""
    waiting_reason: str | None = None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    transitions: list[TransitionResponse] = Field(default_factory=list)


class RunListResponse(BaseModel):
    runs: list[RunResponse]
    next_cursor: int | None


class LogsResponse(BaseModel):
    text: str
    offset: int
    next_offset: int
    done: bool
    """The run has ended and every line is here."""


class RunBatchResponse(BaseModel):
    runs: list[RunResponse]
