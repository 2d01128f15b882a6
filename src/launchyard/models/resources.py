"""What each kind of queue (resource) is, and how many GPUs a rendered config asks for."""

from __future__ import annotations

import enum
from typing import Any

from launchyard.errors import InvalidInputError


class Resource(enum.StrEnum):
    LOCAL = "local"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    SLURM = "slurm"
    RAY = "ray"


# Resources whose backend exists in this release; the others are refused at
# queue creation with a clear message instead of queueing runs nobody can run.
SUPPORTED_RESOURCES: tuple[Resource, ...] = (Resource.LOCAL,)


def gpu_demand(resource: Resource, config: dict[str, Any]) -> int:
    """How many GPUs one run of this rendered config needs, for scheduling."""
    raw = config.get("gpus", 0) if resource in (Resource.LOCAL, Resource.DOCKER) else 0
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidInputError(
            f"config.gpus: {raw!r} is not a GPU count; it must be a whole number >= 0 "
            "(for example '{{gpus}}' with an integer variable)",
            fields={"field": "gpus", "value": raw, "rule": "integer >= 0"},
        )
    return raw


# Keys a local or Docker queue's config may hold, so a typo is refused at queue
# creation instead of being ignored at launch.
LOCAL_CONFIG_KEYS = ("gpus", "env", "working_dir", "cache_dir")


def validate_config_keys(resource: Resource, config: dict[str, Any]) -> None:
    if resource is not Resource.LOCAL:
        return
    for key in config:
        if key not in LOCAL_CONFIG_KEYS:
            raise InvalidInputError(
                f"config.{key}: a local queue's config has no key '{key}'; "
                f"allowed keys: {', '.join(LOCAL_CONFIG_KEYS)}",
                fields={"field": key, "allowed": list(LOCAL_CONFIG_KEYS)},
            )
    env = config.get("env", {})
    if not isinstance(env, dict):
        raise InvalidInputError(
            "config.env must be a mapping of NAME: value", fields={"field": "env", "value": env}
        )
