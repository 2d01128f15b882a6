"""API keys and roles. Keys are random 32-byte tokens, stored only as sha256."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from launchyard.errors import AuthError, PermissionDeniedError
from launchyard.server.tables import ApiKeyRow, EntityRow, MembershipRow, UserRow

KEY_PREFIX = "ly_"


class Role(enum.StrEnum):
    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"

    @property
    def level(self) -> int:
        return {"viewer": 0, "member": 1, "admin": 2}[self.value]


@dataclass(frozen=True)
class Principal:
    user_id: int
    name: str
    is_superuser: bool
    roles: dict[int, Role] = field(default_factory=dict)
    """entity id -> role"""
    queue_scope: frozenset[int] | None = None
    """Set for agent keys: the queues they may serve, and nothing else."""

    def require(
        self, entity: EntityRow, role: Role, action: str, *, agent_ok: bool = False
    ) -> None:
        if self.queue_scope is not None and not agent_ok:
            raise PermissionDeniedError(
                f"{action} is not allowed with an agent key: it only runs agents for its "
                "queues; use a user's key",
                fields={"needed": role.value},
            )
        if self.is_superuser:
            return
        have = self.roles.get(entity.id)
        if have is None:
            # Same answer as a missing entity would get elsewhere is tempting,
            # but a clear "not a member" tells the user whom to ask.
            raise PermissionDeniedError(
                f"user '{self.name}' is not a member of entity '{entity.name}'; "
                f"ask an admin of '{entity.name}' to add you",
                fields={"entity": entity.name, "needed": role.value},
            )
        if have.level < role.level:
            raise PermissionDeniedError(
                f"{action} needs the {role.value} role in entity '{entity.name}'; "
                f"user '{self.name}' is {have.value}",
                fields={"entity": entity.name, "needed": role.value, "have": have.value},
            )


def now() -> datetime:
    return datetime.now(UTC)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(sess: Session, user: UserRow, queue_scope: list[int] | None = None) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    sess.add(
        ApiKeyRow(
            user_id=user.id,
            key_hash=hash_key(key),
            prefix=key[:8],
            created_at=now(),
            queue_scope=queue_scope,
        )
    )
    return key


def authenticate(sess: Session, key: str | None) -> Principal:
    if not key:
        raise AuthError(
            "no API key: pass `Authorization: Bearer KEY`, or run `launchyard login` "
            "or set LAUNCHYARD_API_KEY"
        )
    found = sess.execute(
        select(UserRow, ApiKeyRow.queue_scope)
        .join(ApiKeyRow)
        .where(ApiKeyRow.key_hash == hash_key(key))
    ).one_or_none()
    if found is None:
        raise AuthError(
            f"API key {key[:8]}… is not valid on this server; check LAUNCHYARD_API_KEY "
            "or run `launchyard login` again",
            fields={"key_prefix": key[:8]},
        )
    row, scope = found
    memberships = sess.execute(
        select(MembershipRow).where(MembershipRow.user_id == row.id)
    ).scalars()
    return Principal(
        user_id=row.id,
        name=row.name,
        is_superuser=row.is_superuser,
        roles={m.entity_id: Role(m.role) for m in memberships},
        queue_scope=frozenset(scope) if scope is not None else None,
    )
