"""The database schema (SQLAlchemy 2 ORM). Changes go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 of the key: keys are 32 random bytes, so a fast hash is enough."""
    prefix: Mapped[str] = mapped_column(String(16))
    queue_scope: Mapped[list[Any] | None] = mapped_column(JSON)
    """Queue ids an agent key may serve; such a key can do nothing but run agents."""
    created_at: Mapped[datetime]


class EntityRow(Base):
    __tablename__ = "entities"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]


class MembershipRow(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    entity_id: Mapped[int] = mapped_column(
        ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))


class ProjectRow(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("entity_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class QueueRow(Base):
    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("entity_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str] = mapped_column(String(16))
    config_text: Mapped[str] = mapped_column(Text)
    """The template exactly as the admin wrote it (YAML or JSON), shown back verbatim."""
    variables: Mapped[dict[str, Any]]
    priority_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class JobVersionRow(Base):
    __tablename__ = "job_versions"
    __table_args__ = (UniqueConstraint("job_id", "version"), UniqueConstraint("job_id", "digest"))
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    """image or command, env, default run config and template values."""
    created_at: Mapped[datetime]


class JobAliasRow(Base):
    __tablename__ = "job_aliases"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class AgentRow(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("entity_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    hostname: Mapped[str] = mapped_column(String(200))
    queue_ids: Mapped[list[Any]]
    max_jobs: Mapped[int] = mapped_column(Integer)
    gpu_ids: Mapped[list[Any]]
    state: Mapped[str] = mapped_column(String(16))  # active | draining | stopped
    free_gpus: Mapped[int] = mapped_column(Integer, default=0)
    free_slots: Mapped[int] = mapped_column(Integer, default=0)
    capacity_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    """The agent numbers its capacity reports so that a late, stale one is ignored."""
    gpu_holders: Mapped[dict[str, Any]]
    """GPU id -> run id holding it, as the agent last reported."""
    last_seen_at: Mapped[datetime]
    created_at: Mapped[datetime]


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # The claim query: queued runs of some queues in priority, then FIFO order.
        Index("ix_runs_claim", "queue_id", "state", "priority_rank", "seq"),
        Index("ix_runs_entity_created", "entity_id", "seq"),
        Index("ix_runs_lease", "state", "lease_expires_at"),
        # A queue's and a job's runs, newest first (queue and job pages).
        Index("ix_runs_queue_seq", "queue_id", "seq"),
        Index("ix_runs_job_seq", "job_id", "seq"),
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    job_version: Mapped[int | None] = mapped_column(Integer)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16))
    priority_rank: Mapped[int] = mapped_column(Integer)
    image: Mapped[str | None] = mapped_column(String(500))
    command: Mapped[list[Any]]
    env: Mapped[dict[str, Any]]
    values: Mapped[dict[str, Any]]
    """The template variables' values, defaults filled."""
    run_config: Mapped[dict[str, Any]]
    resolved_config: Mapped[dict[str, Any]]
    gpus: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    gpu_ids: Mapped[list[Any]]
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    """Backend offset of this attempt's output stored so far: a restarted agent resumes here."""
    log_chars: Mapped[int] = mapped_column(BigInteger, default=0)
    """Characters of log stored over all attempts: the offset clients page with."""
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    output_token_hash: Mapped[str | None] = mapped_column(String(64))
    """sha256 of the current attempt's output token, which can only write this run's files."""
    time_limit_s: Mapped[float | None] = mapped_column(Float)
    """The agent stops an attempt that runs longer; the scheduler plans backfill with it."""
    deadline_at: Mapped[datetime | None]
    """When the current attempt will have been stopped at the latest (start + time limit)."""
    blocked_since: Mapped[datetime | None]
    """When a claim first found this queued run at the front of the line unable to start:
    the clock of its GPU reservation (``scheduling.py``)."""


class RunTransitionRow(Base):
    __tablename__ = "run_transitions"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    phase: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)


class RunLogRow(Base):
    __tablename__ = "run_logs"
    __table_args__ = (Index("ix_run_logs_run_offset", "run_id", "offset"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)
    """Character offset of this chunk in the run's whole log."""
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
