"""``launchyard doctor`` checks for Ray: the job client is installed, the dashboard answers."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Any

import httpx

from launchyard.backends.ray.backend import DEFAULT_ADDRESS, INSTALL_HINT

Check = tuple[str, bool, str]


def doctor_checks(options: dict[str, Any]) -> list[Check]:
    """``(name, ok, detail)`` for each check, given the agent config's ``ray`` options."""
    checks: list[Check] = []
    if importlib.util.find_spec("ray") is None:
        checks.append(("ray SDK", False, f"Ray is not installed: {INSTALL_HINT}"))
    else:
        checks.append(("ray SDK", True, f"ray {importlib.metadata.version('ray')}"))
    from_env = os.environ.get("RAY_ADDRESS", "")
    address = options.get("address") or (from_env if from_env.startswith("http") else None)
    address = str(address or DEFAULT_ADDRESS).rstrip("/")
    try:
        reply = httpx.get(
            f"{address}/api/version",
            headers=options.get("headers") or {},
            verify=options.get("verify", True),
            timeout=5,
        )
        reply.raise_for_status()
        version = reply.json().get("ray_version", "?")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        detail = (
            f"no Ray dashboard at {address} ({exc}); start the cluster with "
            "`ray start --head --include-dashboard=true` or set `address` in the agent's "
            "`backends: {ray: ...}` options"
        )
        return [*checks, ("ray dashboard", False, detail)]
    checks.append(("ray dashboard", True, f"Ray {version} answers at {address}"))
    return checks
