"""Typed settings for the server and the agent.

Each field can also be set through a ``LAUNCHYARD_*`` environment variable
(for example ``LAUNCHYARD_LEASE_TTL_S=10``); command-line flags win over both.
Nothing is read at import time: settings are built where a process starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "launchyard"


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAUNCHYARD_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Field(default_factory=lambda: default_data_dir() / "server")
    database_url: str | None = None
    """SQLAlchemy URL; SQLite in ``data_dir`` when unset. PostgreSQL: postgresql+psycopg://…"""
    lease_ttl_s: float = Field(default=30.0, gt=0)
    """An agent that has not renewed a run's lease for this long loses it: the run is requeued."""
    reserve_after_s: float = Field(default=30.0, ge=0)
    """A run blocked this long at the head of its queue holds a GPU reservation."""
    reaper_interval_s: float = Field(default=1.0, gt=0)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'launchyard.db'}"


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAUNCHYARD_AGENT_", extra="ignore")

    name: str | None = None
    """Defaults to the host name; a restarted agent with the same name adopts its runs."""
    entity: str = "default"
    queues: list[str] = Field(default_factory=list)
    max_jobs: int = Field(default=1, ge=1)
    gpus: str = "all"
    """"all" (found through NVML), "none", or a list of device ids like "0,1,2,3"."""
    state_dir: Path | None = None
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options per backend, e.g. ``{"docker": {"base_url": "unix:///var/run/docker.sock"}}``."""
    cancel_grace_s: float = Field(default=10.0, ge=0)
    log_interval_s: float = Field(default=0.5, gt=0)
    poll_interval_s: float = Field(default=0.1, gt=0)
