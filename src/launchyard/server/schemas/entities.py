"""API models for entities, members, projects and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from launchyard.server.services.auth import Role


class EntityCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class EntityResponse(BaseModel):
    name: str
    role: str | None


class MemberRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    role: Role = Role.MEMBER


class MemberResponse(BaseModel):
    user: str
    entity: str
    role: str
    api_key: str | None
    """Only for a user created now; shown once."""


class WhoAmIResponse(BaseModel):
    user: str
    is_superuser: bool
    entities: dict[str, str]


class JobVersionResponse(BaseModel):
    version: str
    aliases: list[str]
    spec: dict[str, Any]
    created_at: datetime


class JobResponse(BaseModel):
    entity: str
    project: str
    name: str
    aliases: dict[str, str]
    versions: list[JobVersionResponse]


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    """vN or an existing alias"""


class AgentKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queues: list[str] = Field(min_length=1, max_length=1000)


class AgentKeyResponse(BaseModel):
    user: str
    entity: str
    queues: list[str]
    api_key: str
    """Shown once."""
