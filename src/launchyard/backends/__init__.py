"""Backends by resource name, each imported only when asked for (their SDKs are optional)."""

from __future__ import annotations

import importlib

from launchyard.backends.base import Backend
from launchyard.errors import InvalidInputError

_BACKENDS: dict[str, tuple[str, str]] = {
    "local": ("launchyard.backends.local", "LocalBackend"),
    "kubernetes": ("launchyard.backends.kubernetes", "KubernetesBackend"),
    "docker": ("launchyard.backends.docker", "DockerBackend"),
    "slurm": ("launchyard.backends.slurm", "SlurmBackend"),
    "ray": ("launchyard.backends.ray", "RayBackend"),
}


def get_backend_class(resource: str) -> type[Backend]:
    """The Backend class for a queue's resource; InvalidInputError for an unknown name."""
    try:
        module_name, class_name = _BACKENDS[resource]
    except KeyError:
        raise InvalidInputError(
            f"unknown resource {resource!r}; known resources: {', '.join(sorted(_BACKENDS))}",
            fields={"resource": resource, "known": sorted(_BACKENDS)},
        ) from None
    backend_class: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return backend_class


def known_resources() -> list[str]:
    """Resources with a backend in this release (their optional SDK may still be missing)."""
    return sorted(_BACKENDS)
