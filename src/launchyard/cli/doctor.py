"""`launchyard doctor`: what this machine can run, and what to fix.

Core checks live here; each backend module may offer
``doctor_checks(options) -> list[tuple[name, ok, detail]]`` for its engine.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from launchyard.backends import _BACKENDS as BACKEND_MODULES
from launchyard.backends import known_resources
from launchyard.cli.common import console, load_mapping
from launchyard.client import Client
from launchyard.errors import LaunchyardError

Check = tuple[str, bool, str]


def _server() -> Check:
    try:
        c = Client.from_env()
        who = c.whoami()
        return ("server", True, f"{c.host} as {who['user']}")
    except LaunchyardError as exc:
        return ("server", False, exc.message)


def _gpus() -> Check:
    from launchyard.agent.gpus import nvml_gpu_ids

    ids = nvml_gpu_ids()
    if ids:
        return ("GPUs (NVML)", True, f"{len(ids)} visible: {ids}")
    return (
        "GPUs (NVML)",
        False,
        "none visible: install the NVIDIA driver and `pip install 'launchyard[nvidia]'`, "
        "or declare devices with `launch-agent --gpus 0,1`",
    )


def _backend_checks(resource: str, options: dict[str, Any]) -> list[Check]:
    module = importlib.import_module(BACKEND_MODULES[resource][0])
    checks = getattr(module, "doctor_checks", None)
    if checks is None:
        return []
    try:
        return list(checks(options))
    except Exception as exc:  # a doctor reports problems; it does not crash on them
        return [(resource, False, f"check failed: {exc}")]


def doctor(
    config_file: Path = typer.Option(None, "--config", "-c", help="Agent config file (YAML)."),
    only: list[str] = typer.Option([], "--only", help="Check only these backends."),
) -> None:
    """Check the server, GPUs and every backend's engine; say what to fix."""
    settings = load_mapping(config_file, "agent config") if config_file else {}
    options = settings.get("backends", {}) or {}
    results: list[Check] = [_server(), _gpus()]
    for resource in known_resources():
        if only and resource not in only:
            continue
        results.extend(_backend_checks(resource, options.get(resource, {})))
    table = Table("CHECK", "OK", "DETAIL")
    for name, ok, detail in results:
        table.add_row(escape(name), "[green]yes[/green]" if ok else "[red]no[/red]", escape(detail))
    console.print(table)
    if not all(ok for _, ok, _ in results):
        raise typer.Exit(1)
