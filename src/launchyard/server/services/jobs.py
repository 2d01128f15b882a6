"""Jobs: versioned, reusable run definitions with aliases (`latest` always follows the newest)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from launchyard.errors import InvalidInputError, NotFoundError
from launchyard.server.services.auth import now
from launchyard.server.tables import JobAliasRow, JobRow, JobVersionRow, ProjectRow

LATEST = "latest"
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
VERSION_RE = re.compile(r"^v(\d+)$")
_INTERPRETERS = {"python", "python3", "sh", "bash", "uv", "node", "torchrun", "accelerate"}


@dataclass(frozen=True)
class JobRef:
    name: str
    alias: str  # "latest", a user alias, or "vN"


def parse_ref(text: str) -> JobRef:
    name, _, alias = text.partition(":")
    if not name:
        raise InvalidInputError(
            f"job {text!r} is not valid: use NAME, NAME:ALIAS or NAME:vN", fields={"job": text}
        )
    return JobRef(name=name, alias=alias or LATEST)


def derive_name(image: str | None, command: list[str]) -> str:
    """A readable job name: the image's name, or the script a command runs."""
    if image:
        base = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    elif not command:
        base = "job"
    else:
        base = os.path.basename(command[0])
        rest = command[1:]
        if base in _INTERPRETERS and rest:
            if rest[0] == "-m" and len(rest) > 1:
                base = rest[1]  # python -m package.module
            elif not rest[0].startswith("-"):
                base = os.path.splitext(os.path.basename(rest[0]))[0]  # python train.py
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "job"
    return cleaned[:100]


def _digest(spec: dict[str, Any]) -> str:
    identity = {"image": spec.get("image"), "command": spec.get("command")}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def record(sess: Session, project: ProjectRow, name: str, spec: dict[str, Any]) -> JobVersionRow:
    """Create or update the job a run came from; a new image/command makes a new version."""
    job = sess.execute(
        select(JobRow).where(JobRow.project_id == project.id, JobRow.name == name)
    ).scalar_one_or_none()
    if job is None:
        job = JobRow(project_id=project.id, name=name, created_at=now())
        sess.add(job)
        sess.flush()
    digest = _digest(spec)
    version = sess.execute(
        select(JobVersionRow).where(JobVersionRow.job_id == job.id, JobVersionRow.digest == digest)
    ).scalar_one_or_none()
    if version is None:
        newest = sess.execute(
            select(func.max(JobVersionRow.version)).where(JobVersionRow.job_id == job.id)
        ).scalar_one()
        version = JobVersionRow(
            job_id=job.id,
            version=0 if newest is None else newest + 1,
            digest=digest,
            spec=spec,
            created_at=now(),
        )
        sess.add(version)
        sess.flush()
        set_alias(sess, job, LATEST, version.version)
    elif version.spec != spec:
        # Same code, new defaults: the last run's values pre-fill the next launch.
        version.spec = spec
    return version


def set_alias(sess: Session, job: JobRow, alias: str, version: int) -> None:
    row = sess.get(JobAliasRow, (job.id, alias))
    if row is None:
        sess.add(JobAliasRow(job_id=job.id, alias=alias, version=version))
    else:
        row.version = version


def get_job(sess: Session, project: ProjectRow, name: str) -> JobRow:
    job = sess.execute(
        select(JobRow).where(JobRow.project_id == project.id, JobRow.name == name)
    ).scalar_one_or_none()
    if job is None:
        known = (
            sess.execute(
                select(JobRow.name).where(JobRow.project_id == project.id).order_by(JobRow.name)
            )
            .scalars()
            .all()
        )
        raise NotFoundError(
            f"job '{name}' does not exist in project '{project.name}'; "
            f"jobs: {', '.join(known) or 'none'}",
            fields={"job": name},
        )
    return job


def resolve(sess: Session, project: ProjectRow, ref: JobRef) -> tuple[JobRow, JobVersionRow]:
    job = get_job(sess, project, ref.name)
    match = VERSION_RE.match(ref.alias)
    if match:
        number = int(match.group(1))
    else:
        alias = sess.get(JobAliasRow, (job.id, ref.alias))
        if alias is None:
            raise NotFoundError(
                f"job '{job.name}' has no alias '{ref.alias}'; aliases: "
                + ", ".join(a for a, _ in aliases(sess, job)),
                fields={"job": job.name, "alias": ref.alias},
            )
        number = alias.version
    version = sess.execute(
        select(JobVersionRow).where(JobVersionRow.job_id == job.id, JobVersionRow.version == number)
    ).scalar_one_or_none()
    if version is None:
        raise NotFoundError(
            f"job '{job.name}' has no version v{number}",
            fields={"job": job.name, "version": number},
        )
    return job, version


def alias_version(sess: Session, project: ProjectRow, ref: JobRef, alias: str) -> JobVersionRow:
    if not ALIAS_RE.match(alias) or VERSION_RE.match(alias):
        raise InvalidInputError(
            f"alias {alias!r} is not valid: letters, digits, '_', '.', '-', and not of the form vN",
            fields={"alias": alias},
        )
    if alias == LATEST:
        raise InvalidInputError("alias 'latest' always follows the newest version; pick another")
    job, version = resolve(sess, project, ref)
    set_alias(sess, job, alias, version.version)
    return version


def aliases(sess: Session, job: JobRow) -> list[tuple[str, int]]:
    rows = sess.execute(
        select(JobAliasRow).where(JobAliasRow.job_id == job.id).order_by(JobAliasRow.alias)
    ).scalars()
    return [(r.alias, r.version) for r in rows]


def versions(sess: Session, job: JobRow) -> list[JobVersionRow]:
    return list(
        sess.execute(
            select(JobVersionRow)
            .where(JobVersionRow.job_id == job.id)
            .order_by(JobVersionRow.version)
        ).scalars()
    )


def list_jobs(sess: Session, project: ProjectRow) -> list[JobRow]:
    return list(
        sess.execute(
            select(JobRow).where(JobRow.project_id == project.id).order_by(JobRow.name)
        ).scalars()
    )
