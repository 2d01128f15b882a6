"""`launchyard launch-agent` and `launchyard agents list|drain`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from launchyard.cli.common import (
    EntityOpt,
    JsonOpt,
    client,
    console,
    load_mapping,
    print_json,
    short_time,
)
from launchyard.client import AgentClient, Credentials
from launchyard.config import AgentSettings
from launchyard.errors import InvalidInputError

app = typer.Typer(no_args_is_help=True)


def launch_agent(
    queues: list[str] = typer.Option([], "--queue", "-q", help="Queue to serve (repeatable)."),
    entity: str = typer.Option(None, "--entity", "-e", help="Entity owning the queues."),
    max_jobs: int = typer.Option(None, "--max-jobs", "-j", help="Runs at once (slots)."),
    gpus: str = typer.Option(None, "--gpus", help="all (NVML), none, or ids like 0,1,2,3."),
    config_file: Path = typer.Option(None, "--config", "-c", help="Agent config file (YAML)."),
    name: str = typer.Option(None, "--name", help="Agent name (default: host name)."),
    state_dir: Path = typer.Option(None, "--state-dir", help="Where the agent keeps what it runs."),
) -> None:
    """Claim runs from queues and launch them on this machine."""
    from launchyard.agent.gpus import parse_gpus
    from launchyard.agent.loop import Agent

    values: dict[str, Any] = load_mapping(config_file, "agent config") if config_file else {}
    flags = {
        "queues": queues or None,
        "entity": entity,
        "max_jobs": max_jobs,
        "gpus": gpus,
        "name": name,
        "state_dir": state_dir,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        settings = AgentSettings(**values)
    except ValueError as exc:
        raise InvalidInputError(f"agent config: {exc}") from None
    if not settings.queues:
        raise InvalidInputError("an agent needs at least one queue: -q QUEUE")
    creds = Credentials.load()
    agent = Agent(settings, AgentClient(creds.host, creds.api_key), parse_gpus(settings.gpus))
    asyncio.run(_run_agent(agent))


async def _run_agent(agent: Any) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    main = asyncio.create_task(agent.run())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if main in done:
        main.result()  # raise what stopped it
        await agent.shutdown(requeue=False)
    else:
        console.print("stopping: handing running runs back to their queues")
        await agent.shutdown(requeue=True)
        await main
    await agent.client.close()


@app.command("list")
def list_agents(entity: str = EntityOpt, as_json: bool = JsonOpt) -> None:
    """Agents of an entity: state, queues, runs and which run holds each GPU."""
    agents = client().list_agents(entity)
    if as_json:
        return print_json(agents)
    table = Table("ID", "NAME", "STATE", "QUEUES", "RUNS", "GPUS", "LAST SEEN")
    for a in agents:
        gpus = " ".join(f"{g}:{a['gpu_holders'].get(str(g), '-')}" for g in a["gpu_ids"])
        table.add_row(
            str(a["id"]),
            a["name"],
            a["state"],
            ",".join(a["queues"]),
            ",".join(a["runs"]),
            gpus or "none",
            short_time(a["last_seen_at"]),
        )
    console.print(table)


@app.command("drain")
def drain(agent_id: int) -> None:
    """Let an agent finish its runs and take no new ones (it exits when idle)."""
    agent = client().drain_agent(agent_id)
    console.print(f"agent {agent['name']} is draining ({len(agent['runs'])} run(s) left)")
