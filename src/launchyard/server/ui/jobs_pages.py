"""Projects and jobs: versions, aliases, rename, and the launch drawer (also "relaunch")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from launchyard.errors import LaunchyardError
from launchyard.models.resources import Resource
from launchyard.models.runs import Priority
from launchyard.server.deps import State
from launchyard.server.services import jobs as jobs_service
from launchyard.server.services import queues as queues_service
from launchyard.server.services import runs as runs_service
from launchyard.server.services.auth import Principal, Role
from launchyard.server.services.entities import get_project, visible_entities
from launchyard.server.tables import EntityRow, JobRow, ProjectRow, RunRow
from launchyard.server.ui import views
from launchyard.server.ui.forms import (
    VariableField,
    command_text,
    form_fields,
    launch_request,
    variable_fields,
)
from launchyard.server.ui.render import can, html_page, render
from launchyard.server.ui.session import page_principal

router = APIRouter()
Form = Annotated[dict[str, str], Depends(form_fields)]


def job_url(entity: str, project: str, job: str) -> str:
    e, p, j = (quote(part, safe="") for part in (entity, project, job))
    return f"/ui/e/{e}/projects/{p}/jobs/{j}"


@dataclass
class QueueChoice:
    name: str
    resource: str
    priority_enabled: bool
    fields: list[VariableField]
    priority: str = Priority.MEDIUM.value


@dataclass
class Drawer:
    """The launch form of one job, pre-filled from a run (the last one, or the one shown)."""

    action: str
    job: str
    queues: list[QueueChoice]
    queue: str
    versions: list[str]
    version: str
    command: str
    has_command: bool
    name: str = ""
    time_limit: str = ""
    open: bool = False
    error: LaunchyardError | None = None
    priorities: list[str] = field(default_factory=lambda: [p.value for p in Priority])


def build_drawer(
    sess: Session,
    entity: EntityRow,
    project: ProjectRow,
    job: JobRow,
    source: RunRow | None,
    *,
    version: str | None = None,
    form: dict[str, str] | None = None,
) -> Drawer:
    _, spec_version = jobs_service.resolve(
        sess, project, jobs_service.JobRef(job.name, version or jobs_service.LATEST)
    )
    spec = spec_version.spec
    has_command = bool(spec.get("command"))
    choices, source_queue = [], None
    for q in queues_service.list_queues(sess, entity):
        if q.resource == Resource.LOCAL.value and not has_command:
            continue  # the API refuses an image-only job on a local queue
        from_source = source is not None and source.queue_id == q.id
        if form is not None:
            prefix = f"v.{q.name}."
            values: dict[str, Any] = {
                k[len(prefix) :]: v for k, v in form.items() if k.startswith(prefix)
            }
        else:
            values = dict(source.values) if source is not None and from_source else {}
        choice = QueueChoice(q.name, q.resource, q.priority_enabled, variable_fields(q, values))
        if source is not None and from_source:
            source_queue = q.name
            choice.priority = Priority.from_rank(source.priority_rank).value
        if form is not None and form.get(f"priority.{q.name}"):
            choice.priority = form[f"priority.{q.name}"]
        choices.append(choice)
    aliases = [a for a, _ in jobs_service.aliases(sess, job)]
    numbers = [f"v{v.version}" for v in reversed(jobs_service.versions(sess, job))]
    form = form or {}
    return Drawer(
        action=job_url(entity.name, project.name, job.name) + "/launch",
        job=job.name,
        queues=choices,
        queue=form.get("queue") or source_queue or (choices[0].name if choices else ""),
        versions=aliases + numbers,
        version=form.get("version") or version or jobs_service.LATEST,
        command=form.get(
            "command", command_text(source.command if source else spec.get("command"))
        ),
        has_command=has_command,
        name=form.get("name", ""),
        time_limit=form.get("time_limit", _limit_text(source, spec)),
    )


def _limit_text(source: RunRow | None, spec: dict[str, Any]) -> str:
    """The time limit a relaunch starts from: the run's own, else the job version's."""
    seconds = source.time_limit_s if source is not None else spec.get("time_limit")
    return f"{seconds:g}s" if seconds else ""


def relaunch_drawer(sess: Session, who: Principal, run: RunRow) -> Drawer | None:
    """The run page's "relaunch with changes": the job's drawer, pre-filled from this run."""
    if run.job_id is None or run.job_version is None:
        return None
    entity = sess.get(EntityRow, run.entity_id)
    job = sess.get(JobRow, run.job_id)
    project = sess.get(ProjectRow, run.project_id)
    if entity is None or job is None or project is None or not can(who, entity, Role.MEMBER):
        return None
    try:
        return build_drawer(sess, entity, project, job, run, version=f"v{run.job_version}")
    except LaunchyardError:  # the version is gone: the run page still shows, without a drawer
        return None


def _project(
    sess: Session, who: Principal, entity: str, project: str
) -> tuple[EntityRow, ProjectRow]:
    ent = views.viewable_entity(sess, who, entity)
    return ent, get_project(sess, ent, project)


@router.get("/ui/projects")
@html_page
def projects_page(request: Request, state: State) -> Response:
    who = page_principal(state, request)
    with state.db.session() as sess:
        groups = [(e, views.list_projects(sess, e)) for e in visible_entities(sess, who)]
    return render("projects.html", user=who, nav="jobs", groups=groups)


@router.get("/ui/e/{entity}/projects/{project}")
@html_page
def project_page(entity: str, project: str, request: Request, state: State) -> Response:
    who = page_principal(state, request)
    with state.db.session() as sess:
        ent, proj = _project(sess, who, entity, project)
        jobs = []
        for job in jobs_service.list_jobs(sess, proj):
            versions, aliases = views.job_versions(sess, job)
            jobs.append((job, versions, aliases))
    return render("jobs.html", user=who, nav="jobs", entity=ent, project=proj, jobs=jobs)


def _job_page(
    request: Request,
    state: State,
    entity: str,
    project: str,
    name: str,
    *,
    form: dict[str, str] | None = None,
    launch_error: LaunchyardError | None = None,
    error: LaunchyardError | None = None,
    notice: str | None = None,
) -> Response:
    who = page_principal(state, request)
    with state.db.session() as sess:
        ent, proj = _project(sess, who, entity, project)
        job = jobs_service.get_job(sess, proj, name)
        versions, aliases = views.job_versions(sess, job)
        last = views.last_run_of_job(sess, job)
        member = can(who, ent, Role.MEMBER)
        drawer = None
        if member:
            version = (form or {}).get("version") or None
            try:
                drawer = build_drawer(sess, ent, proj, job, last, version=version, form=form)
            except LaunchyardError:  # e.g. the alias typed no longer exists
                drawer = build_drawer(sess, ent, proj, job, last, form=form)
            drawer.error = launch_error
            drawer.open = launch_error is not None or request.query_params.get("launch") == "1"
        last_run = runs_service.to_response(sess, last, detail=False) if last else None
    return render(
        "job.html",
        status_code=shown.status_code if (shown := error or launch_error) else 200,
        user=who,
        nav="jobs",
        error=error,
        entity=ent,
        project=proj,
        job=job,
        versions=list(reversed(versions)),
        aliases=aliases,
        last_run=last_run,
        member=member,
        drawer=drawer,
        notice=notice,
        url=job_url(ent.name, proj.name, job.name),
    )


@router.get("/ui/e/{entity}/projects/{project}/jobs/{name}")
@html_page
def job_page(
    entity: str,
    project: str,
    name: str,
    request: Request,
    state: State,
    alias: str | None = None,
    version: str | None = None,
) -> Response:
    notice = f"alias '{alias}' now points at {version}" if alias and version else None
    return _job_page(request, state, entity, project, name, notice=notice)


@router.post("/ui/e/{entity}/projects/{project}/jobs/{name}/launch")
@html_page
def launch(
    entity: str, project: str, name: str, request: Request, state: State, form: Form
) -> Response:
    who = page_principal(state, request)
    try:
        with state.db.session() as sess:
            ent, proj = _project(sess, who, entity, project)
            job = jobs_service.get_job(sess, proj, name)
            ref = jobs_service.JobRef(job.name, form.get("version") or jobs_service.LATEST)
            _, version = jobs_service.resolve(sess, proj, ref)
            queues = {q.name: q for q in queues_service.list_queues(sess, ent)}
            req = launch_request(
                form,
                queues,
                project=proj.name,
                job=job.name,
                spec_command=list(version.spec.get("command") or []),
            )
            run_id = runs_service.submit(sess, who, ent, req).id
    except LaunchyardError as exc:
        return _job_page(request, state, entity, project, name, form=form, launch_error=exc)
    state.notifier.notify()  # wake agents' waiting claims
    return RedirectResponse(f"/ui/runs/{quote(run_id, safe='')}", status_code=303)


@router.post("/ui/e/{entity}/projects/{project}/jobs/{name}/alias")
@html_page
def set_alias(
    entity: str, project: str, name: str, request: Request, state: State, form: Form
) -> Response:
    who = page_principal(state, request)
    alias = form.get("alias", "").strip()
    try:
        with state.db.session() as sess:
            ent, proj = _project(sess, who, entity, project)
            who.require(ent, Role.MEMBER, "setting a job alias")
            ref = jobs_service.JobRef(name, form.get("version", ""))
            version = jobs_service.alias_version(sess, proj, ref, alias)
    except LaunchyardError as exc:
        return _job_page(request, state, entity, project, name, error=exc)
    # Redirect after the change, so reloading the page does not post it again.
    target = f"{job_url(entity, project, name)}?alias={quote(alias)}&version=v{version.version}"
    return RedirectResponse(target, status_code=303)


@router.post("/ui/e/{entity}/projects/{project}/jobs/{name}/rename")
@html_page
def rename(
    entity: str, project: str, name: str, request: Request, state: State, form: Form
) -> Response:
    who = page_principal(state, request)
    new = form.get("new_name", "").strip()
    try:
        with state.db.session() as sess:
            ent, proj = _project(sess, who, entity, project)
            views.rename_job(sess, who, ent, jobs_service.get_job(sess, proj, name), new)
    except LaunchyardError as exc:
        return _job_page(request, state, entity, project, name, error=exc)
    return RedirectResponse(job_url(entity, project, new), status_code=303)
