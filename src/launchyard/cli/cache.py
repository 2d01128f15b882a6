"""`launchyard cache nfs`: the PersistentVolume and claim of a shared NFS cache."""

from __future__ import annotations

import typer
import yaml

app = typer.Typer(no_args_is_help=True)


@app.command("nfs")
def nfs(
    server: str = typer.Option(..., "--server", help="NFS server address."),
    path: str = typer.Option(..., "--path", help="Exported path, e.g. /srv/nfs/kubedata."),
    size: str = typer.Option("100Gi", "--size", help="Capacity, e.g. 100Gi."),
    name: str = typer.Option("nfs-pvc", "--name", help="Name of the claim queues mount."),
) -> None:
    """Print an NFS PersistentVolume and its claim (pipe into `kubectl apply -f -`)."""
    from launchyard.backends.kubernetes import nfs_cache_manifests

    typer.echo(
        yaml.safe_dump_all(nfs_cache_manifests(server, path, size, name=name), sort_keys=False),
        nl=False,
    )
