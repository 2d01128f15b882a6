"""Jinja2 templates, display filters, and the wrapper that turns page errors into pages.

Page handlers raise the same errors as the API. ``html_page`` answers them as an
HTML page (with the error's HTTP status) instead of the API's JSON, and turns
``LoginRequired`` into a redirect to the login page that comes back afterwards.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec
from urllib.parse import quote

import jinja2
import yaml
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError

from launchyard import __version__
from launchyard.errors import LaunchyardError, ServerUnavailableError
from launchyard.models.durations import format_duration
from launchyard.models.runs import TERMINAL_STATES
from launchyard.server.services.auth import Principal, Role
from launchyard.server.tables import EntityRow
from launchyard.server.ui.session import LoginRequired

log = logging.getLogger("launchyard.server.ui")

UI_DIR = Path(__file__).parent
STATIC_DIR = UI_DIR / "static"

P = ParamSpec("P")


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - value).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "—"
    seconds = int(((end or datetime.now(UTC)) - start).total_seconds())
    minutes, sec = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {sec:02d}s" if hours else f"{minutes}m {sec:02d}s"


def _to_yaml(value: Any) -> str:
    if not value:
        return "{}"
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _filesize(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size} B"


def _q(value: Any) -> str:
    """A path segment or query value, escaped."""
    return quote(str(value), safe="")


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(UI_DIR / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
env.filters.update(ago=_ago, when=_when, to_yaml=_to_yaml, q=_q, filesize=_filesize)
env.globals.update(
    version=__version__,
    terminal_states=frozenset(s.value for s in TERMINAL_STATES),
    duration=_duration,
    limit=format_duration,
)


def can(who: Principal, entity: EntityRow | int, role: Role) -> bool:
    """Whether the API would let ``who`` act with ``role`` in the entity: pages offer only that."""
    if who.queue_scope is not None:
        return False  # an agent key acts only as an agent
    if who.is_superuser:
        return True
    have = who.roles.get(entity if isinstance(entity, int) else entity.id)
    return have is not None and have.level >= role.level


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)


def fragment(template: str, **context: Any) -> str:
    return env.get_template(template).render(**context)


_SECURITY_HEADERS = {
    # Scripts and styles come only from /ui/static: no inline script can run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/ui/"
    return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)


def html_page(func: Callable[P, Response]) -> Callable[P, Response]:
    """Wrap a page handler: errors become an error page, LoginRequired a redirect."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        request = kwargs.get("request")
        assert isinstance(request, Request), "page handlers take `request: Request`"
        try:
            return func(*args, **kwargs)
        except LoginRequired:
            return login_redirect(request)
        except OperationalError as exc:
            log.warning("database unavailable: %s", exc.orig)
            error: LaunchyardError = ServerUnavailableError(
                "the database is unavailable right now; retry shortly"
            )
        except LaunchyardError as exc:
            error = exc
        who = getattr(request.state, "ui_user", None)
        return render("error.html", status_code=error.status_code, error=error, user=who)

    return wrapper


def safe_next(target: str | None) -> str:
    """Only same-site paths under /ui/ are followed after login (no open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"
