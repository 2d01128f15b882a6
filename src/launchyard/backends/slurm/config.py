"""A Slurm queue's config: which keys it may hold, and the ``sbatch`` options they become.

Pure functions, used by the server too (queue creation and submission), so nothing
here runs a Slurm command. At queue creation the config still holds placeholders
(``gres: 'gpu:{{gpus}}'``): a string with a placeholder passes the shape checks and
is checked again, rendered, at submission.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from launchyard.errors import InvalidInputError
from launchyard.templating import find_placeholders

OPTION_KEYS: dict[str, str] = {
    "partition": "--partition",
    "cpus_per_task": "--cpus-per-task",
    "mem": "--mem",
    "time": "--time",
    "account": "--account",
    "qos": "--qos",
    "constraint": "--constraint",
    "nodes": "--nodes",
}
"""Config keys that map one to one onto an ``sbatch`` option."""
ALLOWED_KEYS: tuple[str, ...] = (
    *OPTION_KEYS,
    "gres",
    "gpus",
    "env",
    "extra",
    "working_dir",
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GRES_ITEM = re.compile(
    r"(?P<name>[A-Za-z0-9_]+)(?::(?P<type>[A-Za-z0-9_.-]+))??(?::(?P<count>\d+))?"
)
_MEM = re.compile(r"\d+[KMGT]?")
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE|infinite|unlimited")
_NODES = re.compile(r"\d+(-\d+)?")


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse what ``sbatch`` could not take, naming the key, the value and the rule."""
    for key in config:
        if key not in ALLOWED_KEYS:
            raise InvalidInputError(
                f"a slurm queue's config cannot hold {key!r}; allowed keys: "
                f"{', '.join(ALLOWED_KEYS)} (raw #SBATCH options go in `extra`)",
                fields={"key": key, "allowed": list(ALLOWED_KEYS)},
            )
    for key in ("partition", "account", "qos", "constraint", "working_dir"):
        if key in config:
            _text(key, config[key])
    for key in ("cpus_per_task", "gpus"):
        if key in config:
            _count(key, config[key], minimum=1 if key == "cpus_per_task" else 0)
    if "mem" in config:
        _pattern("mem", config["mem"], _MEM, "a size in MB or with a K/M/G/T suffix, e.g. 16G")
    if "time" in config:
        _pattern("time", config["time"], _TIME, "minutes or [days-]hours:minutes:seconds")
    if "nodes" in config:
        _pattern("nodes", config["nodes"], _NODES, "a count or a range, e.g. 1 or 2-4")
    if "gres" in config:
        gres = _text("gres", config["gres"])
        if not _templated(gres):
            _gres_items(gres)
        if "gpus" in config:
            raise InvalidInputError(
                "a slurm queue's config gives both `gres` and `gpus`; keep one "
                "(`gpus: N` is short for `gres: gpu:N`)",
                fields={"key": "gpus"},
            )
    _check_env(config.get("env", {}))
    extra = config.get("extra", [])
    if not isinstance(extra, list):
        raise InvalidInputError(
            f"extra must be a list of #SBATCH options like '--exclusive', got {extra!r}",
            fields={"key": "extra"},
        )
    for item in extra:
        if not isinstance(item, str) or not item.startswith("-") or _has_newline(item):
            raise InvalidInputError(
                f"extra option {item!r} must be one #SBATCH option on one line, "
                "starting with '-', e.g. '--exclusive' or '--gpu-bind=closest'",
                fields={"key": "extra", "value": item},
            )


def gpu_demand(config: Mapping[str, Any]) -> int:
    """GPUs one run asks for: ``gpus``, or the ``gpu`` items of ``gres``, times ``nodes``."""
    per_node = 0
    gpus = config.get("gpus")
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        per_node = gpus
    gres = config.get("gres")
    if isinstance(gres, str) and not _templated(gres):
        per_node = sum(count for name, count in _gres_items(gres) if name == "gpu")
    nodes = config.get("nodes", 1)
    if isinstance(nodes, str) and _NODES.fullmatch(nodes):
        nodes = int(nodes.split("-")[0])
    return per_node * (nodes if isinstance(nodes, int) and not isinstance(nodes, bool) else 1)


def sbatch_options(config: Mapping[str, Any]) -> list[str]:
    """The queue config as ``sbatch`` command-line options (a rendered, checked config)."""
    options = [f"{OPTION_KEYS[key]}={config[key]}" for key in OPTION_KEYS if key in config]
    if "gres" in config:
        options.append(f"--gres={config['gres']}")
    elif config.get("gpus"):
        options.append(f"--gres=gpu:{config['gpus']}")
    return options


def env_value(value: Any) -> str:
    """A queue env value as text; booleans as YAML and JSON spell them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _gres_items(gres: str) -> list[tuple[str, int]]:
    items = []
    for part in gres.split(","):
        match = _GRES_ITEM.fullmatch(part.strip())
        if match is None:
            raise InvalidInputError(
                f"gres {gres!r}: {part!r} is not NAME[:TYPE][:COUNT], e.g. 'gpu:2' or 'gpu:a100:4'",
                fields={"key": "gres", "value": gres},
            )
        items.append((match["name"], int(match["count"] or 1)))
    return items


def _check_env(env: Any) -> None:
    if not isinstance(env, Mapping):
        raise InvalidInputError(f"env must be a mapping of names to values, got {env!r}")
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise InvalidInputError(
                f"env name {name!r} is not a shell variable name (letters, digits, '_')",
                fields={"key": "env", "value": name},
            )
        if not isinstance(value, str | int | float | bool):
            raise InvalidInputError(
                f"env entry {name!r}: {value!r} must map a name to a string or number",
                fields={"key": "env", "value": name},
            )


def _templated(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    found = find_placeholders(value)
    return bool(found.variables or found.macros)


def _has_newline(text: str) -> bool:
    return "\n" in text or "\r" in text


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or _has_newline(value):
        raise InvalidInputError(
            f"{key} must be a non-empty string on one line, got {value!r}", fields={"key": key}
        )
    return value


def _count(key: str, value: Any, *, minimum: int) -> None:
    if _templated(value):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(
            f"{key} must be a whole number >= {minimum}, got {value!r}", fields={"key": key}
        )


def _pattern(key: str, value: Any, pattern: re.Pattern[str], rule: str) -> None:
    if _templated(value):
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInputError(f"{key} must be {rule}, got {value!r}", fields={"key": key})
