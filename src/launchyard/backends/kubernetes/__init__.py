"""The ``kubernetes`` backend: runs as ``batch/v1`` Jobs through the official client.

Modules: ``backend.py`` (the Backend), ``manifest.py`` (queue config → Job and
ConfigMap), ``schema.py`` (checks against the Kubernetes schema), ``states.py``
(Job and pods → phase and reason), ``watch.py`` (watch-fed cache), ``api.py``
(connection and error translation), ``cache.py`` (NFS cache manifests).
Nothing here imports the ``kubernetes`` package at import time.
"""

from typing import Any

from launchyard.backends.kubernetes.backend import KubernetesBackend
from launchyard.backends.kubernetes.cache import nfs_cache_manifests
from launchyard.backends.kubernetes.doctor import cluster_checks

__all__ = ["KubernetesBackend", "doctor_checks", "nfs_cache_manifests"]


def doctor_checks(options: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """`launchyard doctor`'s view of the cluster: context, API, GPU nodes, device plugin."""
    return [(f"kubernetes {c.name}", c.ok, c.detail) for c in cluster_checks(options)]
