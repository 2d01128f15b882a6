"""Durations as people write them: ``90``, ``90s``, ``5m``, ``1h30m``, ``2d``, ``1:30:00``."""

from __future__ import annotations

import re

from launchyard.errors import InvalidInputError

MAX_DURATION_S = 30 * 24 * 3600.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PARTS = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(value: object, field: str = "time_limit") -> float:
    """Seconds in ``value``; a clear error naming ``field`` for anything else."""
    seconds = _seconds(value)
    if seconds is None:
        raise InvalidInputError(
            f"{field} {value!r} is not a duration: write seconds (90), a number with units "
            "(90s, 5m, 1h30m, 2d) or HH:MM:SS",
            fields={field: value},
        )
    if not 0 < seconds <= MAX_DURATION_S:
        raise InvalidInputError(
            f"{field} {value!r} must be more than 0 s and at most 30 days",
            fields={field: value},
        )
    return seconds


def format_duration(seconds: float) -> str:
    """``1h 30m``, ``95 s``: how a limit is shown back to people."""
    if seconds < 120:
        return f"{seconds:g} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    parts += [f"{secs}s"] if secs else []
    return " ".join(parts)


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if re.fullmatch(r"\d+(:\d{1,2}){1,2}", text):
        total = 0.0
        for part in text.split(":"):
            total = total * 60 + int(part)
        return total
    compact = text.replace(" ", "")
    if compact and _PARTS.sub("", compact) == "":
        return sum(float(n) * _UNITS[u] for n, u in _PARTS.findall(compact))
    return None
