"""The kinds of queue (resources). What each one's config means lives in its backend."""

from __future__ import annotations

import enum


class Resource(enum.StrEnum):
    LOCAL = "local"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    SLURM = "slurm"
    RAY = "ray"
