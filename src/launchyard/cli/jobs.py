"""`launchyard jobs list|show|alias`."""

from __future__ import annotations

import typer
from rich.table import Table

from launchyard.cli.common import EntityOpt, JsonOpt, client, console, print_json, short_time
from launchyard.errors import InvalidInputError

app = typer.Typer(no_args_is_help=True)
ProjectOpt = typer.Option("uncategorized", "--project", "-p", help="Project.")


@app.command("list")
def list_jobs(entity: str = EntityOpt, project: str = ProjectOpt, as_json: bool = JsonOpt) -> None:
    """Jobs of a project with their newest version and aliases."""
    jobs = client().list_jobs(entity, project)
    if as_json:
        return print_json(jobs)
    table = Table("NAME", "VERSIONS", "ALIASES")
    for j in jobs:
        table.add_row(
            j["name"],
            str(len(j["versions"])),
            ", ".join(f"{a}→{v}" for a, v in j["aliases"].items()),
        )
    console.print(table)


@app.command("show")
def show(
    name: str, entity: str = EntityOpt, project: str = ProjectOpt, as_json: bool = JsonOpt
) -> None:
    """A job's versions, aliases and what each version runs."""
    job = client().get_job(entity, project, name)
    if as_json:
        return print_json(job)
    table = Table("VERSION", "ALIASES", "CREATED", "RUNS")
    for v in job["versions"]:
        spec = v["spec"]
        what = spec.get("image") or " ".join(spec.get("command") or [])
        table.add_row(v["version"], ", ".join(v["aliases"]), short_time(v["created_at"]), what)
    console.print(table)


@app.command("alias")
def alias(
    target: str = typer.Argument(..., help="NAME:VERSION, e.g. train:v1 (or NAME:ALIAS)."),
    alias_name: str = typer.Argument(..., help="The alias to point at it, e.g. main."),
    entity: str = EntityOpt,
    project: str = ProjectOpt,
) -> None:
    """Point an alias at a job version: `launchyard jobs alias train:v1 main`."""
    name, sep, version = target.partition(":")
    if not sep or not version:
        raise InvalidInputError(f"{target!r}: expected NAME:VERSION such as train:v1")
    client().alias_job(entity, project, name, version, alias_name)
    console.print(f"{name}:{alias_name} → {version}")
