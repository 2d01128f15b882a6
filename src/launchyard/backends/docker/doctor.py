"""`launchyard doctor` checks for Docker queues: the engine, and the NVIDIA runtime."""

from __future__ import annotations

import shutil
from typing import Any

Check = tuple[str, bool, str]


def doctor_checks(options: dict[str, Any]) -> list[Check]:
    try:
        import docker
    except ImportError:
        return [("docker SDK", False, "pip install 'launchyard[docker]'")]
    try:
        client = (
            docker.DockerClient(base_url=options["base_url"])
            if options.get("base_url")
            else docker.from_env()
        )
        info = client.info()
        client.close()
    except docker.errors.DockerException as exc:
        return [
            (
                "docker engine",
                False,
                f"not reachable ({exc}): start dockerd or set "
                "DOCKER_HOST / backends.docker.base_url",
            )
        ]
    checks: list[Check] = [
        ("docker engine", True, f"{info.get('ServerVersion', '?')}, {info.get('Driver', '?')}")
    ]
    runtimes = set(info.get("Runtimes") or {})
    hook = shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-container-runtime")
    if "nvidia" in runtimes or hook:
        checks.append(
            ("NVIDIA container runtime", True, "nvidia" if "nvidia" in runtimes else str(hook))
        )
    else:
        checks.append(
            (
                "NVIDIA container runtime",
                False,
                "not found: install the NVIDIA Container Toolkit, or GPU runs are refused",
            )
        )
    return checks
