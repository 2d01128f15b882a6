"""`launchyard login` and `launchyard entities …`."""

from __future__ import annotations

import typer
from rich.table import Table

from launchyard.cli.common import JsonOpt, client, console, print_json
from launchyard.client import Client, Credentials

entities_app = typer.Typer(no_args_is_help=True)


def login(
    host: str = typer.Option(..., "--host", help="Server URL, e.g. http://127.0.0.1:8080."),
    key: str = typer.Option(
        ..., "--key", help="API key (the admin's is in DATA_DIR/admin-api-key)."
    ),
) -> None:
    """Store the server URL and API key for later commands."""
    creds = Credentials(host=host.rstrip("/"), api_key=key)
    who = Client(creds.host, creds.api_key).whoami()  # refuse a wrong key before saving it
    path = creds.save()
    console.print(f"logged in to {creds.host} as {who['user']}; credentials in {path}")


@entities_app.command("list")
def list_entities(as_json: bool = JsonOpt) -> None:
    """Entities you belong to, with your role."""
    rows = client().request("GET", "/api/v1/entities")
    if as_json:
        return print_json(rows)
    table = Table("ENTITY", "ROLE")
    for r in rows:
        table.add_row(r["name"], r["role"] or "(server admin)")
    console.print(table)


@entities_app.command("create")
def create(name: str) -> None:
    """Create an entity (server admin only)."""
    client().create_entity(name)
    console.print(f"created entity {name}")


@entities_app.command("add-member")
def add_member(
    entity: str = typer.Argument(...),
    user: str = typer.Argument(...),
    role: str = typer.Option("member", "--role", help="admin, member or viewer."),
    as_json: bool = JsonOpt,
) -> None:
    """Add a user to an entity; a new user's API key is printed once."""
    result = client().add_member(entity, user, role)
    if as_json:
        return print_json(result)
    console.print(f"{result['user']} is {result['role']} of {result['entity']}")
    if result["api_key"]:
        typer.echo(result["api_key"])


@entities_app.command("agent-key")
def agent_key(
    entity: str = typer.Argument(...),
    queues: list[str] = typer.Option(..., "--queue", "-q", help="Queue it may serve (repeatable)."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a key that can only run agents for these queues; printed once."""
    result = client().request(
        "POST", f"/api/v1/entities/{entity}/agent-keys", json={"queues": queues}
    )
    if as_json:
        return print_json(result)
    console.print(f"agent key for {', '.join(result['queues'])} in {result['entity']}")
    typer.echo(result["api_key"])
