"""Entry point: the Typer app, its command groups, and how errors are shown."""

from __future__ import annotations

import logging
import sys

import typer

from launchyard.cli import agents, auth, cache, doctor, jobs, queues, runs, server
from launchyard.cli.common import err_console
from launchyard.errors import LaunchyardError

app = typer.Typer(
    name="launchyard",
    help="Self-hosted launch queues for GPU jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(queues.app, name="queue", help="Create and manage queues.")
app.add_typer(runs.runs_app, name="runs", help="List and inspect runs.")
app.add_typer(jobs.app, name="jobs", help="Versioned, reusable jobs.")
app.add_typer(agents.app, name="agents", help="List and drain agents.")
app.add_typer(auth.entities_app, name="entities", help="Entities (teams) and their members.")
app.add_typer(cache.app, name="cache", help="Shared caches (NFS on Kubernetes).")
app.command("launch")(runs.launch)
app.command("logs")(runs.logs)
app.command("cancel")(runs.cancel)
app.command("launch-agent")(agents.launch_agent)
app.command("login")(auth.login)
app.command("server")(server.serve)
app.command("quickstart")(server.quickstart)
app.command("doctor")(doctor.doctor)

_verbose = False


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug logs."),
) -> None:
    global _verbose
    _verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("launchyard").setLevel(logging.DEBUG if verbose else logging.INFO)


def main() -> None:
    # Standalone mode: usage errors exit 2 and `typer.Exit(code)` exits with its code;
    # our own errors are shown here as one red line and exit 1.
    try:
        app()
    except LaunchyardError as exc:
        if _verbose:
            raise
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
