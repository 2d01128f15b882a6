"""`launchyard doctor` and `launchyard cache nfs` through the CLI."""

from __future__ import annotations

import yaml
from tests.e2e.conftest import LiveServer


def test_doctor_reports_the_server_and_each_engine(live_server: LiveServer) -> None:
    result = live_server.cli("doctor", "--only", "slurm", check=False)
    assert "server" in result.stdout and "as admin" in result.stdout
    assert "GPUs (NVML)" in result.stdout
    assert "slurm tools" in result.stdout
    # No NVIDIA driver on this machine: doctor says what to fix and exits 1.
    assert result.returncode == 1


def test_cache_nfs_prints_a_volume_and_its_claim(live_server: LiveServer) -> None:
    out = live_server.cli(
        "cache", "nfs", "--server", "10.1.2.3", "--path", "/srv/nfs/kubedata", "--size", "100Gi"
    ).stdout
    volume, claim = list(yaml.safe_load_all(out))
    assert volume["kind"] == "PersistentVolume" and claim["kind"] == "PersistentVolumeClaim"
    assert volume["spec"]["nfs"] == {"server": "10.1.2.3", "path": "/srv/nfs/kubedata"}
    assert claim["metadata"]["name"] == "nfs-pvc"
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
