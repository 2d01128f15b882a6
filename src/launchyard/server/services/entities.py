"""Entities (teams or users), their members, and projects (created on first use)."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from launchyard.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from launchyard.server.services.auth import Principal, Role, new_key, now
from launchyard.server.tables import EntityRow, MembershipRow, ProjectRow, UserRow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DEFAULT_ENTITY = "default"
ADMIN_USER = "admin"


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidInputError(
            f"{kind} name {name!r} is not valid: use letters, digits, '_', '.', '-' "
            "(at most 100, starting with a letter or digit)",
            fields={"field": kind, "value": name},
        )
    return name


def get_entity(sess: Session, name: str) -> EntityRow:
    row = sess.execute(select(EntityRow).where(EntityRow.name == name)).scalar_one_or_none()
    if row is None:
        known = sess.execute(select(EntityRow.name).order_by(EntityRow.name)).scalars().all()
        raise NotFoundError(
            f"entity '{name}' does not exist; entities: {', '.join(known) or 'none'}",
            fields={"entity": name},
        )
    return row


def visible_entities(sess: Session, who: Principal) -> list[EntityRow]:
    rows = sess.execute(select(EntityRow).order_by(EntityRow.name)).scalars().all()
    return [r for r in rows if who.is_superuser or r.id in who.roles]


def create_entity(sess: Session, who: Principal, name: str) -> EntityRow:
    if not who.is_superuser:
        raise PermissionDeniedError("only the server admin creates entities")
    check_name("entity", name)
    if sess.execute(select(EntityRow).where(EntityRow.name == name)).scalar_one_or_none():
        raise ConflictError(f"entity '{name}' already exists", fields={"entity": name})
    row = EntityRow(name=name, created_at=now())
    sess.add(row)
    sess.flush()
    return row


def add_member(
    sess: Session, who: Principal, entity: EntityRow, user_name: str, role: Role
) -> tuple[UserRow, str | None]:
    """Add (or re-role) a user; a new user gets a first API key, returned once."""
    who.require(entity, Role.ADMIN, "adding members")
    check_name("user", user_name)
    user = sess.execute(select(UserRow).where(UserRow.name == user_name)).scalar_one_or_none()
    key = None
    if user is None:
        user = UserRow(name=user_name, is_superuser=False, created_at=now())
        sess.add(user)
        sess.flush()
        key = new_key(sess, user)
    member = sess.get(MembershipRow, (user.id, entity.id))
    if member is None:
        sess.add(MembershipRow(user_id=user.id, entity_id=entity.id, role=role.value))
    else:
        member.role = role.value
    return user, key


def get_or_create_project(sess: Session, entity: EntityRow, name: str) -> ProjectRow:
    check_name("project", name)
    row = sess.execute(
        select(ProjectRow).where(ProjectRow.entity_id == entity.id, ProjectRow.name == name)
    ).scalar_one_or_none()
    if row is None:
        row = ProjectRow(entity_id=entity.id, name=name, created_at=now())
        sess.add(row)
        sess.flush()
    return row


def get_project(sess: Session, entity: EntityRow, name: str) -> ProjectRow:
    row = sess.execute(
        select(ProjectRow).where(ProjectRow.entity_id == entity.id, ProjectRow.name == name)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(
            f"project '{name}' does not exist in entity '{entity.name}'",
            fields={"project": name},
        )
    return row


def bootstrap(sess: Session, data_dir: Path) -> Path | None:
    """First start: an admin user, the `default` entity, and the admin's key on disk.

    Returns the key file's path when it was written now, None when the server
    was already set up.
    """
    if sess.execute(select(UserRow.id).limit(1)).first() is not None:
        return None
    admin = UserRow(name=ADMIN_USER, is_superuser=True, created_at=now())
    entity = EntityRow(name=DEFAULT_ENTITY, created_at=now())
    sess.add_all([admin, entity])
    sess.flush()
    sess.add(MembershipRow(user_id=admin.id, entity_id=entity.id, role=Role.ADMIN.value))
    key = new_key(sess, admin)
    path = data_dir / "admin-api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o600)
    return path


def create_agent_key(
    sess: Session, who: Principal, entity: EntityRow, queue_ids: list[int]
) -> tuple[UserRow, str]:
    """A key that can only run agents for these queues (a service user of its own)."""
    who.require(entity, Role.ADMIN, "creating an agent key")
    user = UserRow(name=f"agent-{secrets.token_hex(4)}", is_superuser=False, created_at=now())
    sess.add(user)
    sess.flush()
    sess.add(MembershipRow(user_id=user.id, entity_id=entity.id, role=Role.MEMBER.value))
    return user, new_key(sess, user, queue_scope=sorted(queue_ids))
