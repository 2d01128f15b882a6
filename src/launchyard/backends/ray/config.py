"""A Ray queue's config: the keys it may hold, checked without importing Ray.

Used by the server too (queue creation and submission). At queue creation the config
still holds placeholders (``entrypoint_num_gpus: '{{gpus}}'``): a value with a
placeholder passes and is checked again, rendered, at submission. What is inside
``runtime_env`` (pip packages, working_dir, ...) is Ray's to check, when the job starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from launchyard.errors import InvalidInputError
from launchyard.templating import find_placeholders

ALLOWED_KEYS: tuple[str, ...] = (
    "address",
    "entrypoint_num_gpus",
    "entrypoint_num_cpus",
    "entrypoint_memory",
    "entrypoint_resources",
    "runtime_env",
    "env",
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse what Ray's job API could not take, naming the key, the value and the rule."""
    for key in config:
        if key not in ALLOWED_KEYS:
            raise InvalidInputError(
                f"a ray queue's config cannot hold {key!r}; "
                f"allowed keys: {', '.join(ALLOWED_KEYS)}",
                fields={"key": key, "allowed": list(ALLOWED_KEYS)},
            )
    address = config.get("address")
    if not (address is None or _templated(address) or _is_url(address)):
        raise InvalidInputError(
            f"address must be the Ray dashboard's URL, e.g. http://head:8265, got {address!r}",
            fields={"key": "address"},
        )
    for key in ("entrypoint_num_gpus", "entrypoint_num_cpus"):
        if key in config:
            _number(key, config[key], whole=False)
    if "entrypoint_memory" in config:
        _number("entrypoint_memory", config["entrypoint_memory"], whole=True)
    resources = config.get("entrypoint_resources", {})
    if not isinstance(resources, Mapping):
        raise InvalidInputError(
            f"entrypoint_resources must map resource names to amounts, got {resources!r}",
            fields={"key": "entrypoint_resources"},
        )
    for name, amount in resources.items():
        _number(f"entrypoint_resources.{name}", amount, whole=False)
    runtime_env = config.get("runtime_env", {})
    if not isinstance(runtime_env, Mapping):
        raise InvalidInputError(
            f"runtime_env must be a mapping (working_dir, pip, env_vars, ...), got {runtime_env!r}",
            fields={"key": "runtime_env"},
        )
    _check_env("runtime_env.env_vars", runtime_env.get("env_vars", {}))
    _check_env("env", config.get("env", {}))


def gpu_demand(config: Mapping[str, Any]) -> int:
    """GPUs one run holds: ``entrypoint_num_gpus``, a fraction counting as a whole GPU."""
    gpus = config.get("entrypoint_num_gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int | float):
        return 0
    return max(0, math.ceil(gpus))


def env_value(value: Any) -> str:
    """An env value as text; booleans as YAML and JSON spell them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_env(key: str, env: Any) -> None:
    if not isinstance(env, Mapping):
        raise InvalidInputError(
            f"{key} must be a mapping of names to values, got {env!r}", fields={"key": key}
        )
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise InvalidInputError(
                f"{key} name {name!r} is not an environment variable name (letters, digits, '_')",
                fields={"key": key, "value": name},
            )
        if not isinstance(value, str | int | float | bool):
            raise InvalidInputError(
                f"{key} entry {name!r}: {value!r} must map a name to a string or number",
                fields={"key": key, "value": name},
            )


def _templated(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    found = find_placeholders(value)
    return bool(found.variables or found.macros)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _number(key: str, value: Any, *, whole: bool) -> None:
    if _templated(value):
        return
    ok = isinstance(value, int) if whole else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < 0:
        rule = "a whole number >= 0 (bytes)" if whole else "a number >= 0"
        raise InvalidInputError(f"{key} must be {rule}, got {value!r}", fields={"key": key})
