"""The shared model/data cache on Kubernetes: an NFS PersistentVolume and its claim.

``launchyard cache nfs --server ADDR --path /srv/nfs/kubedata --size 100Gi`` prints
these; a queue's ``cache: {pvc: nfs-pvc, path: /root/.cache}`` then mounts the
claim into every run, so weights and data sets are downloaded once.
"""

from __future__ import annotations

import re
from typing import Any

from launchyard.errors import InvalidInputError

_SIZE = re.compile(r"\d+(\.\d+)?([KMGTPE]i?)?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def nfs_cache_manifests(
    server: str, path: str, size: str, name: str = "nfs-pvc"
) -> list[dict[str, Any]]:
    """A ReadWriteMany NFS PersistentVolume and the claim bound to it (by name).

    The claim uses the empty storage class so no provisioner makes a volume of its own.
    """
    if not server or any(c.isspace() for c in server):
        raise InvalidInputError(f"--server: expected an NFS server address, got {server!r}")
    if not path.startswith("/"):
        raise InvalidInputError(f"--path: expected the export's absolute path, got {path!r}")
    if not _SIZE.fullmatch(size):
        raise InvalidInputError(f"--size: expected a quantity such as 100Gi, got {size!r}")
    if not _NAME.fullmatch(name) or len(name) > 63:
        raise InvalidInputError(f"--name: {name!r} is not a valid Kubernetes name (DNS-1123)")
    volume = f"{name}-volume"
    labels = {"app.kubernetes.io/managed-by": "launchyard", "launchyard.cache": name}
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": labels},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "mountOptions": ["nfsvers=4.1"],
                "nfs": {"server": server, "path": path},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": size}},
            },
        },
    ]
