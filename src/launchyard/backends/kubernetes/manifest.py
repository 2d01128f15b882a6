"""A queue's Job spec → the Job and ConfigMap one run attempt creates.

The queue config is a ``batch/v1`` Job (``spec`` at least; ``apiVersion``, ``kind``
and ``metadata`` optional) plus two launchyard options at the top level:

- ``env: {NAME: value}``: added to every container;
- ``cache: {pvc: CLAIM, path: /root/.cache}``: the claim mounted at ``path`` in
  every container, with ``XDG_CACHE_HOME``/``HF_HOME``/``PIP_CACHE_DIR`` under it.

What the user leaves out is filled here, so the two-line configs in the docs
work: the Job's name (from the run id and attempt, so a relaunch finds the same
Job), labels, ``restartPolicy: Never``, ``backoffLimit: 0`` (launchyard requeues,
Kubernetes should not retry on its own), container names, the run's image and
command, its env, and the run config mounted as a file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

from launchyard.backends.base import LaunchSpec
from launchyard.backends.kubernetes import schema
from launchyard.errors import InvalidInputError

OPTIONS = ("env", "cache")
"""Top-level config keys that are launchyard's, not part of the Job."""
CONFIG_DIR = "/etc/launchyard"
CONFIG_FILE = "config.json"
CONFIG_VOLUME = "launchyard-config"
CACHE_VOLUME = "launchyard-cache"
DEFAULT_CACHE_PATH = "/root/.cache"
MANAGED_BY = {"app.kubernetes.io/managed-by": "launchyard"}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=launchyard"
KUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MAX_NAME = 63 - len("-config")  # the ConfigMap's name adds a suffix; both stay DNS labels

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def check_config(config: Any) -> None:
    """Refuse a queue config that is not a valid Job spec (placeholders allowed)."""
    if not isinstance(config, dict):
        raise InvalidInputError("a kubernetes queue's config must be a mapping (a Job spec)")
    _check_options(config)
    job = {key: value for key, value in config.items() if key not in OPTIONS}
    if not isinstance(job.get("spec"), dict):
        raise InvalidInputError(
            "a kubernetes queue's config is a batch/v1 Job: it needs "
            "spec.template.spec.containers (see docs/backends/kubernetes.md)",
            fields={"path": "spec"},
        )
    for key, want in (("apiVersion", "batch/v1"), ("kind", "Job")):
        if key in job and job[key] != want:
            raise InvalidInputError(
                f"{key}: must be {want!r}, got {job[key]!r}; a queue runs Jobs, or leave it out",
                fields={"path": key},
            )
    schema.check_job(job)
    pod = (job["spec"].get("template") or {}).get("spec") or {}
    containers = pod.get("containers")
    if not containers:
        raise InvalidInputError(
            "spec.template.spec.containers: a Job needs at least one container, "
            "e.g. containers: [{image: '${image_uri}'}]",
            fields={"path": "spec.template.spec.containers"},
        )
    if pod.get("restartPolicy") not in (None, "Never", "OnFailure"):
        raise InvalidInputError(
            f"spec.template.spec.restartPolicy: {pod['restartPolicy']!r} is not allowed in a "
            "Job; use Never (launchyard requeues preempted runs) or OnFailure",
            fields={"path": "spec.template.spec.restartPolicy"},
        )
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    for i, container in enumerate(containers):
        for j, mount in enumerate(container.get("volumeMounts") or []):
            name = mount.get("name")
            if name not in volumes and not schema.PLACEHOLDER.search(str(name)):
                path = f"spec.template.spec.containers[{i}].volumeMounts[{j}].name"
                raise InvalidInputError(
                    f"{path}: no volume named {name!r} in spec.template.spec.volumes; add "
                    f"{{name: {name}, persistentVolumeClaim: {{claimName: CLAIM}}}} there",
                    fields={"path": path},
                )


def _check_options(config: dict[str, Any]) -> None:
    env = config.get("env", {})
    if not isinstance(env, dict):
        raise InvalidInputError(f"env: expected a mapping of names to values, got {env!r}")
    cache = config.get("cache")
    if cache is None:
        return
    if not isinstance(cache, dict) or not isinstance(cache.get("pvc"), str):
        raise InvalidInputError(
            f"cache: expected {{pvc: CLAIM, path: {DEFAULT_CACHE_PATH}}}, got {cache!r}",
            fields={"path": "cache"},
        )
    unknown = set(cache) - {"pvc", "path"}
    if unknown:
        raise InvalidInputError(f"cache: unknown key(s) {sorted(unknown)}; use pvc and path")
    path = cache.get("path", DEFAULT_CACHE_PATH)
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInputError(f"cache.path: expected an absolute path, got {path!r}")


def gpu_demand(config: dict[str, Any]) -> int:
    """The ``nvidia.com/gpu`` limits (or requests) summed over the pod's containers."""
    pod = ((config.get("spec") or {}).get("template") or {}).get("spec") or {}
    total = 0
    for container in pod.get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(schema.GPU_RESOURCE)
        if value is None:
            value = (resources.get("requests") or {}).get(schema.GPU_RESOURCE)
        if value is not None and re.fullmatch(r"\d+", str(value).strip()):
            total += int(value)
    return total


def job_name(run_id: str, attempt: int) -> str:
    """A DNS-1123 label unique per (run, attempt); a changed id gets a hash to stay unique."""
    base = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-") or "run"
    suffix = f"-{attempt}"
    if base != run_id or len(base) + len(suffix) > MAX_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        base = f"{base[: MAX_NAME - len(suffix) - 9].rstrip('-')}-{digest}"
    return base + suffix


def config_map_name(job: str) -> str:
    return f"{job}-config"


def labels(spec: LaunchSpec) -> dict[str, str]:
    """The run's labels (run id, attempt, entity, project, queue) as valid label values."""
    return {**MANAGED_BY, **{k: label_value(v) for k, v in spec.labels().items()}}


def label_value(value: str) -> str:
    cleaned = _LABEL_VALUE_BAD.sub("-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def build(
    spec: LaunchSpec, *, ttl_s: int | None, cache: dict[str, str] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job and its ConfigMap for one attempt (the ConfigMap's owner is set once the Job
    exists and has a uid)."""
    config = copy.deepcopy(spec.config)
    env_option = config.pop("env", None) or {}
    cache = config.pop("cache", None) or cache
    name, run_labels = job_name(spec.run_id, spec.attempt), labels(spec)
    config.pop("apiVersion", None)
    config.pop("kind", None)
    meta = config.pop("metadata", None) or {}
    meta = {
        **meta,
        "name": name,
        "labels": {**(meta.get("labels") or {}), **run_labels},
        "annotations": {**(meta.get("annotations") or {}), "launchyard.run-id": spec.run_id},
    }
    meta.pop("namespace", None)
    job_spec = config["spec"]
    job_spec.setdefault("backoffLimit", 0)
    if ttl_s is not None:
        job_spec.setdefault("ttlSecondsAfterFinished", ttl_s)
    if KUEUE_LABEL in meta["labels"]:
        job_spec.setdefault("suspend", True)  # Kueue admits (unsuspends) it
    template = job_spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), **run_labels}
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    volumes = pod.setdefault("volumes", [])
    volumes.append({"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(name)}})
    env = {str(k): _env_text(v) for k, v in env_option.items()}
    env.update({str(k): str(v) for k, v in spec.env.items()})
    env.update(
        LAUNCHYARD_RUN_ID=spec.run_id,
        LAUNCHYARD_ATTEMPT=str(spec.attempt),
        LAUNCHYARD_CONFIG_FILE=f"{CONFIG_DIR}/{CONFIG_FILE}",
    )
    mounts = [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}]
    if cache:
        path = cache.get("path") or DEFAULT_CACHE_PATH
        volumes.append({"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache["pvc"]}})
        mounts.append({"name": CACHE_VOLUME, "mountPath": path})
        env.update(
            XDG_CACHE_HOME=path,
            HF_HOME=f"{path}/huggingface",
            PIP_CACHE_DIR=f"{path}/pip",
            LAUNCHYARD_CACHE_DIR=path,
        )
    for i, container in enumerate(pod.get("containers") or []):
        _fill_container(container, i, spec, env, mounts)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(name), "labels": run_labels},
        "data": {CONFIG_FILE: json.dumps(spec.run_config, indent=2, sort_keys=True)},
    }
    return job, config_map


def owned_by(config_map: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap with the Job as its owner, so deleting the Job deletes it too."""
    meta = job["metadata"]
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "blockOwnerDeletion": True,
    }
    return {**config_map, "metadata": {**config_map["metadata"], "ownerReferences": [owner]}}


def _fill_container(
    container: dict[str, Any],
    index: int,
    spec: LaunchSpec,
    env: dict[str, str],
    mounts: list[dict[str, Any]],
) -> None:
    container.setdefault("name", "main" if index == 0 else f"main-{index}")
    if not container.get("image"):
        if not spec.image:
            raise InvalidInputError(
                f"spec.template.spec.containers[{index}].image: a kubernetes run needs an "
                "image; submit with -d IMAGE or write the image in the queue's config",
                fields={"path": f"spec.template.spec.containers[{index}].image"},
            )
        container["image"] = spec.image
    if index == 0 and spec.command:
        container["args"] = list(spec.command)  # like `docker run IMAGE CMD`: the entrypoint stays
    own = [e for e in container.get("env") or [] if e.get("name") not in env]
    container["env"] = own + [{"name": k, "value": v} for k, v in env.items()]
    taken = {m.get("mountPath") for m in container.get("volumeMounts") or []}
    container["volumeMounts"] = [
        *(container.get("volumeMounts") or []),
        *(m for m in mounts if m["mountPath"] not in taken),
    ]
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        if isinstance(resources.get(kind), dict):
            resources[kind] = {k: str(v) for k, v in resources[kind].items()}


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
