"""`launchyard launch`, `runs list|show`, `logs`, `cancel`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from launchyard import templating
from launchyard.cli.common import (
    EntityOpt,
    JsonOpt,
    client,
    console,
    err_console,
    load_mapping,
    parse_assignments,
    print_json,
    short_time,
)
from launchyard.client import Client
from launchyard.errors import BackendError, InvalidInputError, MissingDependencyError

runs_app = typer.Typer(no_args_is_help=True)


def typed_values(c: Client, entity: str, queue: str, raw: dict[str, str]) -> dict[str, Any]:
    """Check --set values against the queue's variables before sending (the server checks too)."""
    if not raw:
        return {}
    declared = c.get_queue(entity, queue)["variables"]
    values: dict[str, Any] = {}
    for name, text in raw.items():
        if name not in declared:
            templating.resolve_values(declared, {name: text}, queue=queue)  # raises: unknown
        value = templating.coerce_value(name, declared[name]["schema"], text)
        templating.resolve_values({name: declared[name]}, {name: value}, queue=queue)
        values[name] = value
    return values


def launch(
    command: list[str] = typer.Argument(
        None, help="Command and args after `--` (a docker image's own if none)."
    ),
    queue: str = typer.Option(..., "--queue", "-q", help="Queue to submit to."),
    entity: str = EntityOpt,
    project: str = typer.Option(
        "uncategorized", "--project", "-p", help="Project (created on first use)."
    ),
    image: str = typer.Option(None, "--docker-image", "-d", help="Container image to run."),
    job: str = typer.Option(None, "--job", "-j", help="Saved job: NAME, NAME:ALIAS or NAME:vN."),
    sets: list[str] = typer.Option([], "--set", "--set-var", help="Template variable NAME=VALUE."),
    config_file: Path = typer.Option(
        None, "--config", "-c", help="Run config file (JSON or YAML)."
    ),
    env: list[str] = typer.Option([], "--env", help="Environment variable NAME=VALUE for the run."),
    priority: str = typer.Option(None, "--priority", help="critical, high, medium or low."),
    time_limit: str = typer.Option(
        None,
        "--time-limit",
        "-t",
        help="Stop the run after this long (90s, 5m, 1h30m, 1:30:00). The scheduler also "
        "starts smaller runs ahead of a big one when their limits say they end in time.",
    ),
    name: str = typer.Option(None, "--name", help="Run name."),
    job_name: str = typer.Option(None, "--job-name", help="Name of the job this run records."),
    idempotency_key: str = typer.Option(
        None, "--idempotency-key", help="Retries with the same key create one run."
    ),
    build: Path = typer.Option(
        None,
        "--build",
        help="Build this folder (Dockerfile, or requirements.txt + entry point) "
        "on this Docker host and run the image; unchanged folders are not rebuilt.",
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Stream logs; exit with the run's exit code."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Submit a run to a queue. Prints the run id alone on the last line."""
    c = client()
    if build is not None:
        image = build_and_tag(build)
    request: dict[str, Any] = {
        "queue": queue,
        "project": project,
        "image": image,
        "command": command or None,
        "job": job,
        "job_name": job_name,
        "values": typed_values(c, entity, queue, parse_assignments(sets, "--set")),
        "config": load_mapping(config_file, "run config") if config_file else None,
        "env": parse_assignments(env, "--env"),
        "priority": priority,
        "time_limit": time_limit,
        "name": name,
        "idempotency_key": idempotency_key,
    }
    if not (command or image or job):
        raise InvalidInputError(
            "nothing to run: give a command after `--`, an image with -d, or a job with -j"
        )
    run = c.submit(entity, request)
    if follow:
        err_console.print(f"run {run['id']} queued on {queue}; following its logs")
        code = follow_logs(c, run["id"])
        typer.echo(run["id"])
        raise typer.Exit(code)
    if as_json:
        print_json(run)
    else:
        typer.echo(run["id"])


def build_and_tag(folder: Path) -> str:
    """Build a code folder into an image (tagged by content hash) on the local Docker host."""
    from launchyard.backends.build import build_image

    try:
        import docker
    except ImportError:
        raise MissingDependencyError(
            "--build needs the Docker SDK: pip install 'launchyard[docker]'"
        ) from None
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as exc:
        raise BackendError(
            f"--build needs a Docker engine on this machine ({exc}); "
            "start dockerd or set DOCKER_HOST"
        ) from None
    err_console.print(f"building {folder} …")
    tag = build_image(engine, folder)
    err_console.print(f"image {tag}")
    return tag


def follow_logs(c: Client, run_id: str, offset: int = 0) -> int:
    """Print the log as it grows; return the run's exit code once it ends."""
    while True:
        page = c.logs(run_id, offset=offset, wait=20)
        if page["text"]:
            sys.stdout.write(page["text"])
            sys.stdout.flush()
        offset = page["next_offset"]
        if page["done"]:
            break
    run = c.get_run(run_id)
    err_console.print(f"run {run_id} {run['state']}: {run.get('reason') or ''}", highlight=False)
    if run["exit_code"] is not None:
        return int(run["exit_code"])
    return 0 if run["state"] == "finished" else 1


@runs_app.command("list")
def list_runs(
    entity: str = EntityOpt,
    queue: str = typer.Option(None, "--queue", "-q"),
    project: str = typer.Option(None, "--project", "-p"),
    state: list[str] = typer.Option([], "--state", "-s", help="Filter by state (repeatable)."),
    limit: int = typer.Option(50, "--limit", "-n"),
    as_json: bool = JsonOpt,
) -> None:
    """Runs of an entity, newest first."""
    page = client().list_runs(
        entity, queue=queue, project=project, state=state or None, limit=limit
    )
    if as_json:
        return print_json(page["runs"])
    table = Table("ID", "NAME", "QUEUE", "STATE", "GPUS", "EXIT", "CREATED", "REASON")
    for r in page["runs"]:
        table.add_row(
            r["id"],
            r["name"],
            r["queue"],
            r["state"],
            ",".join(map(str, r["gpu_ids"])) or str(r["gpus"]),
            "" if r["exit_code"] is None else str(r["exit_code"]),
            short_time(r["created_at"]),
            (r["reason"] or "")[:60],
        )
    console.print(table)


@runs_app.command("show")
def show(run_id: str, as_json: bool = JsonOpt) -> None:
    """A run's state, config, values and transitions."""
    r = client().get_run(run_id)
    if as_json:
        return print_json(r)
    console.print(
        f"[bold]{r['id']}[/bold] {r['name']}  state={r['state']}  queue={r['queue']}  "
        f"project={r['project']}  job={r['job']}:{r['job_version']}",
        highlight=False,
    )
    if r["state"] == "queued":
        console.print(f"position {r['position']} in queue: {r['waiting_reason']}", highlight=False)
    console.print(
        f"command: {' '.join(r['command'])}  image: {r['image']}", highlight=False, markup=False
    )
    console.print(
        f"values: {r['values']}  gpus: {r['gpus']} {r['gpu_ids']}  "
        f"exit_code: {r['exit_code']}  agent: {r['agent']}",
        highlight=False,
        markup=False,
    )
    table = Table("AT", "STATE", "PHASE", "ATTEMPT", "REASON")
    for t in r["transitions"]:
        table.add_row(
            short_time(t["at"]), t["state"], t["phase"], str(t["attempt"]), t["reason"] or ""
        )
    console.print(table)


def logs(
    run_id: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
) -> None:
    """Print a run's logs."""
    c = client()
    if follow:
        raise typer.Exit(follow_logs(c, run_id))
    offset = 0
    while True:
        page = c.logs(run_id, offset=offset)
        sys.stdout.write(page["text"])
        if not page["text"] or page["next_offset"] == offset:
            break
        offset = page["next_offset"]


def cancel(run_id: str, as_json: bool = JsonOpt) -> None:
    """Cancel a run: a queued run at once; a running one is stopped, then killed."""
    run = client().cancel(run_id)
    if as_json:
        return print_json(run)
    verb = "cancelled" if run["state"] == "cancelled" else "cancel requested for"
    typer.echo(f"{verb} run {run_id}")


def wait_for(c: Client, run_id: str, states: set[str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        run = c.get_run(run_id)
        if run["state"] in states or time.monotonic() > deadline:
            return run
        time.sleep(0.1)
