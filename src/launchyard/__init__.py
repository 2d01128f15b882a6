"""launchyard: self-hosted launch queues for GPU jobs.

Inside a run, :func:`run_config` returns the run's config (the job's defaults
with the run's overrides), :func:`run_id` its id, and :func:`save` keeps a file
(an image, a checkpoint, a metrics JSON) as one of the run's outputs.
"""

from __future__ import annotations

import json
import os
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "run_config", "run_id", "save"]


def run_id() -> str | None:
    """The id of the run this process belongs to, or None outside launchyard."""
    return os.environ.get("LAUNCHYARD_RUN_ID")


def run_config() -> dict[str, Any]:
    """The run's config from ``LAUNCHYARD_CONFIG_FILE``; empty outside launchyard."""
    path = os.environ.get("LAUNCHYARD_CONFIG_FILE")
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    config = data.get("config", {}) if isinstance(data, dict) else {}
    return dict(config)


def save(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Keep a file as an output of this run; returns the name it is stored under.

    Uploaded at once with the run's output token (which can write only this
    run's files); if the server cannot be reached, the file is copied into
    ``LAUNCHYARD_OUTPUT_DIR`` and the agent uploads it when the run ends.
    """
    import shutil
    from pathlib import Path

    source = Path(path)
    stored = name or source.name
    host = os.environ.get("LAUNCHYARD_HOST")
    token = os.environ.get("LAUNCHYARD_OUTPUT_TOKEN")
    current = run_id()
    if host and token and current:
        import httpx

        try:
            with open(source, "rb") as fh:
                response = httpx.put(
                    f"{host}/api/v1/runs/{current}/files/{stored}",
                    content=fh.read(),
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=600,
                )
            if response.is_success:
                return stored
        except httpx.TransportError:
            pass
    folder = os.environ.get("LAUNCHYARD_OUTPUT_DIR")
    if not folder:
        raise RuntimeError("launchyard.save() keeps files of a launchyard run; none is running")
    target = Path(folder) / stored
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return stored
