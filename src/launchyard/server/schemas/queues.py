"""API models for queues."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _priority_flag(value: Any) -> Any:
    # Queue files say `priority: enabled` (the shape ML teams already write).
    if isinstance(value, str) and value.lower() in ("enabled", "disabled"):
        return value.lower() == "enabled"
    return value


class QueueCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str
    resource: str = "local"
    config: str | dict[str, Any] = Field(default="", description="YAML or JSON text, or a mapping")
    variables: dict[str, Any] = Field(default_factory=dict)
    priority: bool = False

    _flag = field_validator("priority", mode="before")(_priority_flag)


class QueueUpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: str | dict[str, Any] | None = None
    variables: dict[str, Any] | None = None
    priority: bool | None = None

    _flag = field_validator("priority", mode="before")(_priority_flag)


class ParseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: str | dict[str, Any]
    variables: dict[str, Any] = Field(default_factory=dict)


class ParseResponse(BaseModel):
    variables: list[str]
    macros: list[str]
    undeclared: list[str]
    """Variables the config uses that `variables` does not declare yet."""
    config: dict[str, Any]


class QueueResponse(BaseModel):
    entity: str
    name: str
    resource: str
    config: str
    config_parsed: dict[str, Any]
    variables: dict[str, Any]
    priority: bool
    counts: dict[str, int]
    created_at: datetime
    updated_at: datetime
