"""A docker queue's config: which keys it may hold, their rules, and the container they make.

Pure (no Docker SDK, no I/O): the server uses :func:`check_config` at queue
creation, where placeholders such as ``'{{gpus}}'`` are still strings (they are
accepted wherever a value is expected), and again at submission on the rendered
config, where every value must obey its rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from launchyard.errors import InvalidInputError
from launchyard.templating import find_placeholders

ALLOWED_CONFIG_KEYS = (
    "image",
    "gpus",
    "env",
    "cache_dir",
    "cache_path",
    "shm_size",
    "memory",
    "cpus",
    "volumes",
    "network",
    "user",
    "working_dir",
    "pull",
)
PULL_POLICIES = ("missing", "always", "never")
DEFAULT_CACHE_PATH = "/root/.cache"

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:ib?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _templated(value: Any) -> bool:
    """Whether a value still holds a placeholder (only at queue creation)."""
    if not isinstance(value, str):
        return False
    found = find_placeholders(value)
    return bool(found.variables or found.macros)


def _refuse(key: str, value: Any, rule: str) -> InvalidInputError:
    return InvalidInputError(
        f"docker queue config {key}: {value!r} {rule}",
        fields={"key": key, "value": value if isinstance(value, str | int | float) else None},
    )


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse unknown keys and values that break their rule, naming the key and the fix."""
    for key in config:
        if key not in ALLOWED_CONFIG_KEYS:
            raise InvalidInputError(
                f"a docker queue's config cannot hold {key!r}; "
                f"allowed keys: {', '.join(ALLOWED_CONFIG_KEYS)}",
                fields={"key": key, "allowed": list(ALLOWED_CONFIG_KEYS)},
            )
    for key, value in config.items():
        if value is None or _templated(value):
            continue
        _CHECKS[key](key, value)


def gpu_demand(config: Mapping[str, Any]) -> int:
    """The GPU count a rendered config asks for (0 when absent)."""
    value = config.get("gpus", 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_size(key: str, value: Any) -> int:
    """Bytes from ``512m``, ``12g``, ``12Gi``, ``1.5GB`` or a plain number (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    size = int(float(match["number"]) * _UNITS[match["unit"].lower()]) if match else 0
    if size <= 0:
        raise _refuse(key, value, "is not a size; write bytes or a number with k, m, g, t (12g)")
    return size


def container_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Docker SDK ``containers.create`` keywords for the resource keys of a rendered config."""
    options: dict[str, Any] = {}
    if config.get("memory") is not None:
        memory = parse_size("memory", config["memory"])
        options["mem_limit"] = memory
        options["memswap_limit"] = memory  # no swap on top: a run over its limit is OOMKilled
    if config.get("shm_size") is not None:
        options["shm_size"] = parse_size("shm_size", config["shm_size"])
    if config.get("cpus") is not None:
        options["nano_cpus"] = int(float(config["cpus"]) * 1e9)
    if config.get("network"):
        options["network_mode"] = str(config["network"])
    if config.get("user") is not None:
        options["user"] = str(config["user"])
    if config.get("working_dir"):
        options["working_dir"] = str(config["working_dir"])
    return options


# -- one rule per key ----------------------------------------------------------------------


def _check_gpus(key: str, value: Any) -> None:
    if isinstance(value, str) and value.strip().isdigit():
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _refuse(key, value, "must be a whole number of GPUs >= 0, e.g. gpus: '{{gpus}}'")


def _check_env(key: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _refuse(key, value, "must be a mapping of names to values, e.g. {HF_HOME: /cache}")
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str | int | float | bool):
            raise _refuse(key, {name: item}, "must map a name to a string or a number")


def _check_text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _refuse(key, value, "must be a non-empty string")


def _check_user(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise _refuse(key, value, "must be a user name or id, e.g. '1000:1000'")


def _check_container_path(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _refuse(key, value, "must be an absolute path inside the container")


def _check_host_path(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _refuse(key, value, "must be a folder on the Docker host (a path)")


def _check_size(key: str, value: Any) -> None:
    parse_size(key, value)


def _check_cpus(key: str, value: Any) -> None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _refuse(key, value, "must be a number of CPUs, e.g. 4 or 0.5") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _refuse(key, value, "must be a number of CPUs > 0, e.g. 4 or 0.5")


def _check_pull(key: str, value: Any) -> None:
    if value not in PULL_POLICIES:
        raise _refuse(key, value, f"must be one of: {', '.join(PULL_POLICIES)}")


def _check_volumes(key: str, value: Any) -> None:
    if not isinstance(value, list):
        raise _refuse(key, value, "must be a list of 'host:container[:ro]' strings")
    for item in value:
        if _templated(item):
            continue
        parts = item.split(":") if isinstance(item, str) else []
        if not 2 <= len(parts) <= 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise _refuse(key, item, "must read 'host:container', 'host:container:ro' or ':rw'")
        host, container = parts[0], parts[1]
        if not (host.startswith("/") or _VOLUME_NAME.fullmatch(host)):
            raise _refuse(key, item, "must start with a host path (/srv/data) or a volume name")
        if not container.startswith("/"):
            raise _refuse(key, item, "must mount at an absolute path inside the container")


_CHECKS = {
    "image": _check_text,
    "gpus": _check_gpus,
    "env": _check_env,
    "cache_dir": _check_host_path,
    "cache_path": _check_container_path,
    "shm_size": _check_size,
    "memory": _check_size,
    "cpus": _check_cpus,
    "volumes": _check_volumes,
    "network": _check_text,
    "user": _check_user,
    "working_dir": _check_container_path,
    "pull": _check_pull,
}
