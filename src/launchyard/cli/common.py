"""What every command shares: the client, output (tables or --json), reading files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from launchyard.client import Client
from launchyard.errors import InvalidInputError

# Piped output (scripts, tests) gets wide lines instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

EntityOpt = typer.Option(
    "default",
    "--entity",
    "-e",
    envvar="LAUNCHYARD_ENTITY",
    help="Entity (team or user) [env LAUNCHYARD_ENTITY].",
)
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")


def client() -> Client:
    return Client.from_env()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML or JSON file that must hold a mapping; errors name the file and the line."""
    from launchyard import templating

    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInputError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    return templating.parse_config(text, source=str(path))


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInputError(
                f"{flag} {item!r}: expected NAME=VALUE", fields={"field": flag, "value": item}
            )
        out[name.strip()] = value
    return out


def short_time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False).rstrip()
