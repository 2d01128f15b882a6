"""The Kubernetes checks of ``launchyard doctor``: can this agent config run GPU Jobs?

Each check says what it found or what to do; a failed check does not stop the
ones after it, except that nothing can be asked of an API that is not reachable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launchyard.backends.kubernetes import api
from launchyard.backends.kubernetes.schema import GPU_RESOURCE
from launchyard.errors import LaunchyardError

DEVICE_PLUGIN = "nvidia-device-plugin"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def cluster_checks(options: dict[str, Any]) -> list[Check]:
    """Context, API reachable, GPU nodes, the NVIDIA device plugin, for these agent options."""
    try:
        api_client, namespace = api.connect(options)
    except LaunchyardError as exc:
        return [Check("context", False, exc.message)]
    k8s = api.sdk()
    host = api_client.configuration.host
    checks = [
        Check("context", True, f"{_context_name(k8s, options)}: {host}, namespace {namespace}")
    ]
    try:
        version = api.call(k8s.client.VersionApi(api_client).get_code, what="asking the version")
    except LaunchyardError as exc:
        api_client.close()
        return [*checks, Check("API reachable", False, exc.message)]
    checks.append(Check("API reachable", True, f"Kubernetes {version.get('gitVersion')}"))
    core, apps = k8s.client.CoreV1Api(api_client), k8s.client.AppsV1Api(api_client)
    checks.append(_gpu_nodes(core))
    checks.append(_device_plugin(apps))
    api_client.close()
    return checks


def _context_name(k8s: Any, options: dict[str, Any]) -> str:
    if options.get("in_cluster"):
        return "in-cluster service account"
    if options.get("context"):
        return f"context {options['context']}"
    try:
        _, current = k8s.config.list_kube_config_contexts(config_file=options.get("kubeconfig"))
    except Exception:  # noqa: BLE001 - connect() already loaded it; the name is cosmetic
        return "in-cluster service account"
    return f"context {current.get('name')}"


def _gpu_nodes(core: Any) -> Check:
    try:
        nodes = api.call(core.list_node, what="listing nodes").get("items") or []
    except LaunchyardError as exc:
        return Check("GPU nodes", False, exc.message)
    counts = {}
    for node in nodes:
        value = str(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0"))
        if value.isdigit() and int(value) > 0:
            counts[node["metadata"]["name"]] = int(value)
    if not counts:
        return Check(
            "GPU nodes",
            False,
            f"none of {len(nodes)} node(s) has allocatable "
            f"{GPU_RESOURCE}; install the NVIDIA device plugin (or GPU operator)",
        )
    listed = ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))
    return Check("GPU nodes", True, f"{sum(counts.values())} GPU(s) on {listed}")


def _device_plugin(apps: Any) -> Check:
    try:
        sets = (
            api.call(apps.list_daemon_set_for_all_namespaces, what="listing daemon sets").get(
                "items"
            )
            or []
        )
    except LaunchyardError as exc:
        return Check("NVIDIA device plugin", False, f"could not look: {exc.message}")
    for ds in sets:
        meta, status = ds["metadata"], ds.get("status") or {}
        if DEVICE_PLUGIN in meta["name"] or DEVICE_PLUGIN in str(meta.get("labels") or {}):
            ready, wanted = status.get("numberReady", 0), status.get("desiredNumberScheduled", 0)
            return Check(
                "NVIDIA device plugin",
                ready == wanted and wanted > 0,
                f"{meta.get('namespace')}/{meta['name']}: {ready}/{wanted} ready",
            )
    return Check(
        "NVIDIA device plugin",
        False,
        "no nvidia-device-plugin daemon set found; see https://github.com/NVIDIA/k8s-device-plugin",
    )
