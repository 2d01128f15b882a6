"""The ``kubernetes`` backend: runs as ``batch/v1`` Jobs through the official client.

Modules: ``backend.py`` (the Backend), ``manifest.py`` (queue config → Job and
ConfigMap), ``schema.py`` (checks against the Kubernetes schema), ``states.py``
(Job and pods → phase and reason), ``watch.py`` (watch-fed cache), ``api.py``
(connection and error translation), ``cache.py`` (NFS cache manifests).
Nothing here imports the ``kubernetes`` package at import time.
"""

from launchyard.backends.kubernetes.backend import KubernetesBackend
from launchyard.backends.kubernetes.cache import nfs_cache_manifests

__all__ = ["KubernetesBackend", "nfs_cache_manifests"]
