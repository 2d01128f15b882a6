"""Jobs: list, show, alias."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from launchyard.server.deps import Caller, State
from launchyard.server.schemas.entities import AliasRequest, JobResponse, JobVersionResponse
from launchyard.server.services import jobs as service
from launchyard.server.services.auth import Principal, Role
from launchyard.server.services.entities import get_entity, get_project
from launchyard.server.tables import JobRow, ProjectRow

router = APIRouter(prefix="/api/v1/entities/{entity}/projects/{project}/jobs", tags=["jobs"])


def _project(sess: Session, who: Principal, entity: str, project: str, role: Role) -> ProjectRow:
    ent = get_entity(sess, entity)
    who.require(ent, role, "this action on jobs")
    return get_project(sess, ent, project)


def _response(sess: Session, entity: str, project: ProjectRow, job: JobRow) -> JobResponse:
    aliases = service.aliases(sess, job)
    return JobResponse(
        entity=entity,
        project=project.name,
        name=job.name,
        aliases={a: f"v{v}" for a, v in aliases},
        versions=[
            JobVersionResponse(
                version=f"v{v.version}",
                aliases=[a for a, n in aliases if n == v.version],
                spec=v.spec,
                created_at=v.created_at,
            )
            for v in service.versions(sess, job)
        ],
    )


@router.get("")
def list_jobs(entity: str, project: str, state: State, who: Caller) -> list[JobResponse]:
    with state.db.session() as sess:
        proj = _project(sess, who, entity, project, Role.VIEWER)
        return [_response(sess, entity, proj, j) for j in service.list_jobs(sess, proj)]


@router.get("/{name}")
def show_job(entity: str, project: str, name: str, state: State, who: Caller) -> JobResponse:
    with state.db.session() as sess:
        proj = _project(sess, who, entity, project, Role.VIEWER)
        return _response(sess, entity, proj, service.get_job(sess, proj, name))


@router.put("/{name}/aliases/{alias}")
def set_alias(
    entity: str, project: str, name: str, alias: str, req: AliasRequest, state: State, who: Caller
) -> JobResponse:
    with state.db.session() as sess:
        proj = _project(sess, who, entity, project, Role.MEMBER)
        service.alias_version(sess, proj, service.JobRef(name=name, alias=req.version), alias)
        return _response(sess, entity, proj, service.get_job(sess, proj, name))
