"""The web UI's pages: login, queues, a queue, a run, projects and jobs, agents.

Server-rendered HTML behind the same API keys as /api/v1 (a login page turns a
key into a session cookie). Reads and writes go through the same services as
the API, so a page refuses exactly what the API refuses, with the same words,
and offers an action only to a user whose role allows it. The small JSON and
event-stream endpoints the pages' script calls live in ``api.py``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from launchyard.backends import known_resources
from launchyard.errors import AuthError, LaunchyardError
from launchyard.server.deps import State
from launchyard.server.services import queues as queues_service
from launchyard.server.services import runs as runs_service
from launchyard.server.services.auth import Role
from launchyard.server.services.entities import get_entity, visible_entities
from launchyard.server.ui import api, jobs_pages, views
from launchyard.server.ui.forms import form_fields, rows_for, variable_rows, variables_from_rows
from launchyard.server.ui.render import (
    STATIC_DIR,
    can,
    html_page,
    render,
    safe_next,
)
from launchyard.server.ui.session import (
    AgentKeyLoginError,
    cookie_principal,
    login,
    logout,
    page_principal,
)

__all__ = ["STATIC_DIR", "router"]

router = APIRouter(include_in_schema=False)
router.include_router(api.router)
router.include_router(jobs_pages.router)
Form = Annotated[dict[str, str], Depends(form_fields)]


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
@router.get("/ui/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/queues", status_code=307)


@router.get("/ui/login")
@html_page
def login_page(request: Request, state: State, next: str = "/ui/") -> Response:
    if cookie_principal(state, request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render("login.html", user=None, next=safe_next(next), error=None)


@router.post("/ui/login")
@html_page
def login_submit(request: Request, state: State, form: Form) -> Response:
    target = safe_next(form.get("next"))
    response = RedirectResponse(target, status_code=303)
    try:
        login(state, request, response, form.get("api_key", ""))
    except AgentKeyLoginError as exc:
        return render("login.html", status_code=401, user=None, next=target, error=exc.message)
    except AuthError:
        # Never echo the key back: a page can be screenshotted or cached.
        if not form.get("api_key", "").strip():
            message = "Enter an API key."
        else:
            message = (
                "That API key is not valid on this server. Paste the whole key (it starts "
                "with ly_); an admin can make one with `launchyard entities add-member`."
            )
        return render("login.html", status_code=401, user=None, next=target, error=message)
    return response


@router.post("/ui/logout")
@html_page
def logout_submit(request: Request, state: State) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    logout(response)
    return response


def _queues_page(
    request: Request,
    state: State,
    *,
    form: dict[str, str] | None = None,
    error: LaunchyardError | None = None,
) -> Response:
    who = page_principal(state, request)
    posted = variable_rows(form or {})
    with state.db.session() as sess:
        groups = views.queues_overview(sess, who, state.settings.lease_ttl_s)
        admin_of = [e.name for e in visible_entities(sess, who) if can(who, e, Role.ADMIN)]
    return render(
        "queues.html",
        status_code=error.status_code if error else 200,
        user=who,
        nav="queues",
        groups=groups,
        admin_of=admin_of,
        resources=known_resources(),
        form=form or {},
        rows=rows_for(list(posted), posted),
        error=error,
    )


@router.get("/ui/queues")
@html_page
def queues_page(request: Request, state: State) -> Response:
    return _queues_page(request, state)


@router.post("/ui/queues")
@html_page
def create_queue(request: Request, state: State, form: Form) -> Response:
    who = page_principal(state, request)
    entity_name = form.get("entity", "")
    try:
        variables = variables_from_rows(variable_rows(form))
        with state.db.session() as sess:
            entity = get_entity(sess, entity_name)
            queue = queues_service.create_queue(
                sess,
                who,
                entity,
                name=form.get("name", "").strip(),
                resource=form.get("resource", "local"),
                config=form.get("config", ""),
                variables=variables,
                priority_enabled=form.get("priority") == "on",
            )
            url = f"/ui/e/{quote(entity.name)}/queues/{quote(queue.name)}"
    except LaunchyardError as exc:
        return _queues_page(request, state, form=form, error=exc)
    return RedirectResponse(url, status_code=303)


@router.get("/ui/e/{entity}/queues/{name}")
@html_page
def queue_page(
    entity: str,
    name: str,
    request: Request,
    state: State,
    after: str | None = None,
    before: int | None = None,
) -> Response:
    who = page_principal(state, request)
    with state.db.session() as sess:
        view = views.queue_view(sess, who, entity, name, state.settings, after=after, before=before)
    return render(
        "queue.html",
        user=who,
        nav="queues",
        view=view,
        after=after or "",
        before=before or "",
        state_order=views.STATE_ORDER,
    )


@router.get("/ui/runs/{run_id}")
@html_page
def run_page(run_id: str, request: Request, state: State) -> Response:
    who = page_principal(state, request)
    with state.db.session() as sess:
        detail = api.run_detail(sess, who, run_id, state)
        drawer = jobs_pages.relaunch_drawer(sess, who, detail.row)
    tail_from = max(0, detail.row.log_chars - api.LOG_TAIL_CHARS)
    return render(
        "run.html",
        user=who,
        nav="queues",
        d=detail,
        run=detail.run,
        drawer=drawer,
        tail_from=tail_from,
    )


@router.post("/ui/runs/{run_id}/cancel")
@html_page
def cancel_run(run_id: str, request: Request, state: State) -> Response:
    who = page_principal(state, request)
    with state.db.session() as sess:
        run = runs_service.get_run(sess, who, run_id, Role.MEMBER)
        runs_service.cancel(sess, who, run)
    state.notifier.notify()
    return RedirectResponse(f"/ui/runs/{quote(run_id)}", status_code=303)


@router.get("/ui/agents")
@html_page
def agents_page(request: Request, state: State) -> Response:
    who = page_principal(state, request)
    with state.db.session() as sess:
        groups = views.agents_overview(sess, who, state.settings.lease_ttl_s)
    return render("agents.html", user=who, nav="agents", groups=groups)
