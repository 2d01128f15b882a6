"""The Kubernetes backend's pure parts: queue config checks, the Job it builds, GPU demand,
the NFS cache manifests and the agent's Helm chart (rendered here, checked against the
Kubernetes schema)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchyard import templating
from launchyard.backends import get_backend_class
from launchyard.backends.base import LaunchSpec
from launchyard.backends.kubernetes import KubernetesBackend, manifest, nfs_cache_manifests, schema
from launchyard.backends.kubernetes import backend as backend_module
from launchyard.config import AgentSettings
from launchyard.errors import InvalidInputError, MissingDependencyError

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "launchyard-agent"
QUEUE = {
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "image": "${image_uri}",
                        "resources": {
                            "limits": {"cpu": 4, "memory": "12Gi", "nvidia.com/gpu": "{{gpus}}"}
                        },
                    }
                ],
                "restartPolicy": "Never",
            }
        },
        "backoffLimit": 0,
    }
}


def rendered(gpus: int = 2, config: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = templating.render(config or QUEUE, {"gpus": gpus}, {"image_uri": "img:1"})
    return out


def spec(config: dict[str, Any], **fields: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "run_id": "x7k2m9q4p1",
        "attempt": 1,
        "entity": "acme",
        "project": "vision",
        "queue": "gpu",
        "command": [],
        "config": config,
        "run_config": {"lr": 0.1},
        "image": "img:1",
    }
    values.update(fields)
    return LaunchSpec(**values)


# -- queue config checks --------------------------------------------------------------------


def test_the_registry_knows_kubernetes_without_importing_the_client() -> None:
    code = (
        "import sys; from launchyard.backends import get_backend_class; "
        "c = get_backend_class('kubernetes'); print(c.assigns_gpus, 'kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert get_backend_class("kubernetes") is KubernetesBackend


def test_templates_with_placeholders_pass_at_queue_creation() -> None:
    KubernetesBackend.check_config(QUEUE)
    KubernetesBackend.check_config(rendered())


BAD = [
    (
        "volumeMounts under resources",
        ["spec", "template", "spec", "containers", 0, "resources", "volumeMounts"],
        [{"name": "a", "mountPath": "/a"}],
        "spec.template.spec.containers[0].resources.volumeMounts: unknown field 'volumeMounts' in "
        "ResourceRequirements; volumeMounts belongs to the container "
        "(spec.template.spec.containers[0]), not to resources",
    ),
    (
        "containers one level too high",
        ["spec", "containers"],
        [],
        "spec.containers: unknown field 'containers' in JobSpec; containers belongs under "
        "spec.template.spec",
    ),
    (
        "snake_case",
        ["spec", "template", "spec", "containers", 0, "image_pull_policy"],
        "Always",
        "did you mean 'imagePullPolicy'? Kubernetes fields are camelCase",
    ),
    ("typo", ["spec", "backofLimit"], 2, "did you mean 'backoffLimit'?"),
    (
        "number where a string goes",
        ["spec", "template", "spec", "containers", 0, "env"],
        [{"name": "A", "value": 1}],
        "spec.template.spec.containers[0].env[0].value: expected a string, got 1; quote it: '1'",
    ),
    (
        "string where a number goes",
        ["spec", "backoffLimit"],
        "two",
        "spec.backoffLimit: expected a whole number, got 'two'",
    ),
    (
        "GPU count",
        ["spec", "template", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"],
        "1.5",
        "nvidia.com/gpu must be a whole number of GPUs",
    ),
    (
        "bad quantity",
        ["spec", "template", "spec", "containers", 0, "resources", "limits", "memory"],
        "12 GB",
        "'12 GB' is not a Kubernetes quantity",
    ),
    (
        "required field",
        ["spec", "template", "spec", "volumes"],
        [{"name": "v"}, {"persistentVolumeClaim": {"claimName": "c"}}],
        "spec.template.spec.volumes[1].name: Volume requires 'name'",
    ),
    (
        "Always is not for Jobs",
        ["spec", "template", "spec", "restartPolicy"],
        "Always",
        "'Always' is not allowed in a Job",
    ),
    (
        "mount of a missing volume",
        ["spec", "template", "spec", "containers", 0, "volumeMounts"],
        [{"name": "nfs-storage", "mountPath": "/root/.cache"}],
        "no volume named 'nfs-storage' in spec.template.spec.volumes",
    ),
    ("kind", ["kind"], "Deployment", "kind: must be 'Job'"),
    ("cache option", ["cache"], {"claim": "nfs-pvc"}, "cache: expected {pvc: CLAIM"),
    (
        "no containers",
        ["spec", "template", "spec", "containers"],
        [],
        "a Job needs at least one container",
    ),
]


@pytest.mark.parametrize(
    ("where", "value", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_schema_errors_name_the_path_and_the_fix(
    where: list[Any], value: Any, message: str
) -> None:
    config = copy.deepcopy(QUEUE)
    node: Any = config
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(InvalidInputError) as caught:
        KubernetesBackend.check_config(config)
    assert message in caught.value.message


def test_not_a_job_at_all() -> None:
    with pytest.raises(InvalidInputError, match="needs spec.template.spec.containers"):
        KubernetesBackend.check_config({"image": "x"})


def test_gpu_demand_sums_containers_limits_then_requests() -> None:
    config = rendered(3)
    containers = config["spec"]["template"]["spec"]["containers"]
    containers.append({"image": "side", "resources": {"requests": {"nvidia.com/gpu": "1"}}})
    containers.append({"image": "cpu-only"})
    assert KubernetesBackend.gpu_demand(config) == 4
    assert KubernetesBackend.gpu_demand(rendered(0)) == 0


def test_a_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    monkeypatch.setitem(sys.modules, "kubernetes.client", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'launchyard\[kubernetes\]'"):
        KubernetesBackend.check_config(QUEUE)


# -- the Job it builds ----------------------------------------------------------------------


def test_job_names_are_dns_labels_from_the_run_id() -> None:
    assert manifest.job_name("x7k2m9q4p1", 3) == "x7k2m9q4p1-3"  # digits kept
    upper, lower = manifest.job_name("Run_A1", 1), manifest.job_name("run-a1", 1)
    assert upper != lower and re.fullmatch(r"run-a1-[0-9a-f]{8}-1", upper)
    long = manifest.job_name("r" * 100, 12)
    assert len(manifest.config_map_name(long)) <= 63 and long.endswith("-12")
    assert manifest.label_value("__a/b__") == "a-b"


def test_build_fills_what_the_user_left_out() -> None:
    s = spec(
        rendered(),
        command=["python", "train.py"],
        env={"LAUNCHYARD_PROJECT": "vision", "SEED": "1"},
    )
    job, config_map = manifest.build(s, ttl_s=600, cache=None)
    assert job["metadata"]["name"] == "x7k2m9q4p1-1"
    assert job["metadata"]["annotations"]["launchyard.run-id"] == "x7k2m9q4p1"
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["template"]["metadata"]["labels"]["launchyard.run-id"] == "x7k2m9q4p1"
    [container] = pod["containers"]
    assert container["name"] == "main" and container["image"] == "img:1"
    assert container["args"] == ["python", "train.py"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "12Gi", "nvidia.com/gpu": "2"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SEED"] == "1" and env["LAUNCHYARD_RUN_ID"] == "x7k2m9q4p1"
    assert env["LAUNCHYARD_ATTEMPT"] == "1"
    assert env["LAUNCHYARD_CONFIG_FILE"] == "/etc/launchyard/config.json"
    assert json.loads(config_map["data"]["config.json"]) == {"lr": 0.1}
    schema.check_job(job)  # what is sent is a valid Job
    schema.check_object(config_map, "V1ConfigMap")
    owned = manifest.owned_by(config_map, {"metadata": {"name": "j", "uid": "u-1"}})
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_build_keeps_what_the_user_wrote() -> None:
    config = rendered()
    config["metadata"] = {"labels": {"team": "vision"}}
    config["env"] = {"FROM_QUEUE": "q", "OVERRIDDEN": "queue"}
    config["spec"]["template"]["spec"]["containers"][0].update(
        name="trainer",
        env=[{"name": "OWN", "value": "1"}, {"name": "OVERRIDDEN", "value": "c"}],
        command=["torchrun"],
    )
    config["spec"]["backoffLimit"] = 2
    job, _ = manifest.build(spec(config, env={"OVERRIDDEN": "run"}), ttl_s=None, cache=None)
    assert job["metadata"]["labels"]["team"] == "vision"
    assert job["spec"]["backoffLimit"] == 2 and "ttlSecondsAfterFinished" not in job["spec"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "trainer" and container["command"] == ["torchrun"]
    env = [(e["name"], e["value"]) for e in container["env"]]
    assert ("OWN", "1") in env and ("FROM_QUEUE", "q") in env
    assert [v for n, v in env if n == "OVERRIDDEN"] == ["run"]  # the run's env wins


def test_cache_mounts_the_claim_in_every_container() -> None:
    config = rendered(config={**QUEUE, "cache": {"pvc": "nfs-pvc"}})
    config["spec"]["template"]["spec"]["containers"].append({"image": "sidecar"})
    job, _ = manifest.build(spec(config), ttl_s=None, cache={"pvc": "agent", "path": "/x"})
    pod = job["spec"]["template"]["spec"]
    assert {"name": "launchyard-cache", "persistentVolumeClaim": {"claimName": "nfs-pvc"}} in (
        pod["volumes"]
    )
    for container in pod["containers"]:
        assert {"name": "launchyard-cache", "mountPath": "/root/.cache"} in container[
            "volumeMounts"
        ]
    schema.check_job(job)


def test_an_image_is_needed() -> None:
    config = rendered()
    config["spec"]["template"]["spec"]["containers"][0]["image"] = None
    with pytest.raises(InvalidInputError, match="needs an image"):
        manifest.build(spec(config, image=None), ttl_s=None, cache=None)


def test_unknown_agent_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="ttl_seconds"):
        KubernetesBackend.create(state_dir=tmp_path, lease_ttl_s=1, options={"ttl_seconds": 5})


# -- the NFS cache ----------------------------------------------------------------------------


def test_nfs_cache_manifests() -> None:
    pv, pvc = nfs_cache_manifests("10.0.0.5", "/srv/nfs/kubedata", "100Gi")
    assert pv["spec"]["nfs"] == {"server": "10.0.0.5", "path": "/srv/nfs/kubedata"}
    assert pv["spec"]["capacity"] == {"storage": "100Gi"}
    assert (
        pvc["metadata"]["name"] == "nfs-pvc"
        and pvc["spec"]["volumeName"] == (pv["metadata"]["name"])
    )
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] == pv["spec"]["accessModes"]
    schema.check_object(pv, "V1PersistentVolume")
    schema.check_object(pvc, "V1PersistentVolumeClaim")
    for bad in (("", "/p", "1Gi"), ("s", "rel", "1Gi"), ("s", "/p", "lots")):
        with pytest.raises(InvalidInputError):
            nfs_cache_manifests(*bad)


# -- the Helm chart ---------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _lookup(expr: str, ctx: dict[str, Any]) -> Any:
    if expr.startswith('"'):
        return json.loads(expr)
    node: Any = ctx
    for part in expr.lstrip(".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _evaluate(expr: str, ctx: dict[str, Any]) -> Any:
    """The few template functions the chart uses, as Helm defines them."""
    first, *pipes = [p.strip() for p in expr.split("|")]
    words = re.findall(r'"[^"]*"|\S+', first)
    if words[0] == "required":
        value = _lookup(words[2], ctx)
        if not value:
            raise AssertionError(json.loads(words[1]))
    elif words[0] == "toYaml":
        value = yaml.safe_dump(_lookup(words[1], ctx), default_flow_style=False).rstrip()
    elif words[0] == "not":
        value = not _lookup(words[1], ctx)
    else:
        value = _lookup(words[0], ctx)
    for pipe in pipes:
        name, *args = pipe.split()
        if name == "default":
            value = value or _lookup(args[0], ctx)
        elif name == "quote":
            value = json.dumps(str(value))
        elif name == "toJson":
            value = json.dumps(value)
        elif name == "nindent":
            value = "\n" + "\n".join(" " * int(args[0]) + line for line in value.splitlines())
        else:
            raise AssertionError(f"the chart uses {name!r}; teach this renderer or avoid it")
    return value


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Render the chart's templates like ``helm template`` does for these constructs."""
    ctx = {"Values": values, "Release": {"Name": "ly", "Namespace": "ml"}}
    docs = []
    for template in sorted((CHART / "templates").glob("*.yaml")):
        out, emitting, pos = "", [True], 0
        text = template.read_text()
        for m in _ACTION.finditer(text):
            if all(emitting):
                out += text[pos : m.start()]
            if m[1]:
                out = out.rstrip(" \t\n")
            body = m[2]
            if body.startswith("if "):
                emitting.append(bool(_evaluate(body[3:], ctx)) and all(emitting))
            elif body == "end":
                emitting.pop()
            elif all(emitting):
                out += str(_evaluate(body, ctx))
            pos = m.end()
            if m[3]:
                pos += len(text[pos:]) - len(text[pos:].lstrip(" \t\n"))
        out += text[pos:]
        docs += [d for d in yaml.safe_load_all(out) if d]
    return docs


def test_helm_chart_renders_valid_objects_with_exact_permissions() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values.update(apiKey="ly_secret")
    values["kubernetes"]["cachePvc"] = "nfs-pvc"
    docs = {d["kind"]: d for d in render_chart(values)}
    assert set(docs) == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Deployment",
    }
    for kind, doc in docs.items():
        schema.check_object(doc, f"V1{kind}")
    rules = {(r["apiGroups"][0], r["resources"][0]): r["verbs"] for r in docs["Role"]["rules"]}
    assert rules == {
        ("batch", "jobs"): ["create", "get", "list", "watch", "delete"],
        ("", "pods"): ["get", "list", "watch"],
        ("", "pods/log"): ["get"],
        ("", "configmaps"): ["create", "delete"],
    }
    assert docs["Secret"]["stringData"] == {"api-key": "ly_secret"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    agent = yaml.safe_load(docs["ConfigMap"]["data"]["agent.yaml"])
    settings = AgentSettings(**agent)
    assert settings.queues == ["gpu"] and settings.gpus == "none"
    options = settings.backends["kubernetes"]
    assert set(options) <= set(backend_module.OPTIONS)
    assert options["in_cluster"] is True and options["namespace"] == "ml"
    assert options["cache_pvc"] == "nfs-pvc"


def test_helm_chart_can_use_an_existing_secret() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values.update(existingSecret="agent-key")
    docs = {d["kind"]: d for d in render_chart(values)}
    assert "Secret" not in docs
    env = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    key_ref = next(e for e in env if e["name"] == "LAUNCHYARD_API_KEY")["valueFrom"]
    assert key_ref["secretKeyRef"]["name"] == "agent-key"
    with pytest.raises(AssertionError, match="set apiKey"):
        render_chart(yaml.safe_load((CHART / "values.yaml").read_text()))
