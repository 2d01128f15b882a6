"""launchyard: self-hosted launch queues for GPU jobs.

Inside a run, :func:`run_config` returns the run's config (the job's defaults
with the run's overrides) and :func:`run_id` its id.
"""

from __future__ import annotations

import json
import os
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "run_config", "run_id"]


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
