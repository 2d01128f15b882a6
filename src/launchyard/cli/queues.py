"""`launchyard queue …`: create, list, show, update, delete, parse."""

from __future__ import annotations

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
    dump_yaml,
    load_mapping,
    print_json,
)
from launchyard.errors import InvalidInputError

app = typer.Typer(no_args_is_help=True)

QUEUE_FILE_KEYS = ("name", "resource", "config", "variables", "priority")


def _config_text(value: Any, base: Path) -> str:
    """A queue file's `config`: a mapping, YAML/JSON text, or the path of such a file."""
    if isinstance(value, dict):
        return dump_yaml(value)
    if isinstance(value, str):
        candidate = (base / value).expanduser()
        if "\n" not in value and candidate.suffix in (".yaml", ".yml", ".json"):
            if not candidate.is_file():
                raise InvalidInputError(f"config file {candidate} does not exist")
            return candidate.read_text()
        return value
    if value is None:
        return ""
    raise InvalidInputError("config must be a mapping, YAML/JSON text, or a file path")


def read_queue_file(path: Path) -> dict[str, Any]:
    data = load_mapping(path, "queue file")
    for key in data:
        if key not in QUEUE_FILE_KEYS:
            raise InvalidInputError(
                f"{path}: unknown key '{key}'; a queue file holds {', '.join(QUEUE_FILE_KEYS)}",
                fields={"field": key},
            )
    spec = {k: v for k, v in data.items() if k in QUEUE_FILE_KEYS}
    if "config" in spec:
        spec["config"] = _config_text(spec["config"], path.parent)
    return spec


@app.command("create")
def create(
    file: Path = typer.Option(None, "--file", "-f", help="Queue file (YAML or JSON)."),
    name: str = typer.Option(None, "--name", "-n", help="Queue name (overrides the file)."),
    resource: str = typer.Option(
        None, "--resource", "-r", help="local, docker, kubernetes, slurm or ray."
    ),
    config: str = typer.Option(
        None, "--config", "-c", help="Config template: a file path or inline YAML/JSON."
    ),
    priority: bool = typer.Option(None, "--priority/--no-priority", help="Allow run priorities."),
    entity: str = EntityOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a queue from a file and/or flags."""
    spec: dict[str, Any] = read_queue_file(file) if file else {}
    if name:
        spec["name"] = name
    if resource:
        spec["resource"] = resource
    if config is not None:
        spec["config"] = _config_text(config, Path.cwd())
    if priority is not None:
        spec["priority"] = priority
    if not spec.get("name"):
        raise InvalidInputError("a queue needs a name: `name:` in the file or --name")
    queue = client().create_queue(entity, spec)
    if as_json:
        print_json(queue)
    else:
        console.print(
            f"created queue [bold]{queue['name']}[/bold] ({queue['resource']}) in {entity}"
        )


@app.command("update")
def update(
    name: str = typer.Argument(..., help="Queue name."),
    file: Path = typer.Option(
        None, "--file", "-f", help="Queue file with the new config/variables."
    ),
    config: str = typer.Option(None, "--config", "-c", help="New config template: path or inline."),
    priority: bool = typer.Option(None, "--priority/--no-priority"),
    entity: str = EntityOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Change a queue's config, variables or priority setting."""
    changes: dict[str, Any] = {}
    if file:
        spec = read_queue_file(file)
        changes = {k: spec[k] for k in ("config", "variables", "priority") if k in spec}
    if config is not None:
        changes["config"] = _config_text(config, Path.cwd())
    if priority is not None:
        changes["priority"] = priority
    queue = client().update_queue(entity, name, changes)
    if as_json:
        print_json(queue)
    else:
        console.print(f"updated queue [bold]{name}[/bold]")


@app.command("delete")
def delete(name: str, entity: str = EntityOpt) -> None:
    """Delete a queue (refused while runs are in flight)."""
    client().delete_queue(entity, name)
    console.print(f"deleted queue {name}")


@app.command("list")
def list_(entity: str = EntityOpt, as_json: bool = JsonOpt) -> None:
    """Queues of an entity with their run counts per state."""
    queues = client().list_queues(entity)
    if as_json:
        return print_json(queues)
    table = Table("NAME", "RESOURCE", "QUEUED", "RUNNING", "FINISHED", "FAILED", "VARIABLES")
    for q in queues:
        c = q["counts"]
        table.add_row(
            q["name"],
            q["resource"],
            str(c.get("queued", 0)),
            str(sum(c.get(s, 0) for s in ("claimed", "starting", "running"))),
            str(c.get("finished", 0)),
            str(c.get("failed", 0) + c.get("crashed", 0)),
            ", ".join(q["variables"]),
        )
    console.print(table)


@app.command("show")
def show(name: str, entity: str = EntityOpt, as_json: bool = JsonOpt) -> None:
    """A queue's config template, variables and counts."""
    q = client().get_queue(entity, name)
    if as_json:
        return print_json(q)
    console.print(
        f"[bold]{q['name']}[/bold]  resource={q['resource']}  "
        f"priority={'enabled' if q['priority'] else 'disabled'}"
    )
    console.print("config:", highlight=False)
    console.print(q["config"], highlight=False, markup=False)
    if q["variables"]:
        console.print("variables:")
        console.print(dump_yaml(q["variables"]), highlight=False, markup=False)
    console.print("runs: " + (", ".join(f"{k}={v}" for k, v in q["counts"].items()) or "none"))


@app.command("parse")
def parse(
    file: Path = typer.Argument(..., help="A queue file, or a bare config template."),
    as_json: bool = JsonOpt,
) -> None:
    """List the template variables and macros a config uses ("Parse configuration")."""
    data = load_mapping(file, "file")
    if "config" in data and set(data) <= set(QUEUE_FILE_KEYS):
        spec = read_queue_file(file)
        tree = templating.parse_config(spec.get("config", ""), source=str(file))
        declared = templating.parse_variables(spec.get("variables"))
    else:
        tree, declared = data, {}
    found = templating.find_placeholders(tree)
    if declared:
        templating.check_template(tree, declared)
    unknown = [m for m in found.macros if m not in templating.KNOWN_MACROS]
    if unknown:
        templating.check_template(
            tree, {v: {"schema": {"type": "string"}} for v in found.variables}
        )
    variables: dict[str, Any] = {
        v: declared.get(v, {}).get("schema", "undeclared") for v in found.variables
    }
    result = {"variables": variables, "macros": list(found.macros)}
    if as_json:
        return print_json(result)
    table = Table("KIND", "NAME", "SCHEMA")
    for var, schema in variables.items():
        table.add_row("variable", "{{" + var + "}}", str(schema))
    for macro in found.macros:
        table.add_row("macro", "${" + macro + "}", "filled by launchyard")
    console.print(table)
