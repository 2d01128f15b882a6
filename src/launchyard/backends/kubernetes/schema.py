"""Check a queue's Job spec against the Kubernetes schema before anything is sent.

The schema is the one the official client is generated from: every model class
(``V1Job``, ``V1Container``, ...) lists its fields (``attribute_map``) and their
types (``openapi_types``). Walking the config against them catches what the API
server would refuse (unknown fields, wrong types) at queue creation, with an
error that names the path and, where it can, the fix: a field placed one level
too deep or too shallow is found where it belongs ("volumeMounts belongs to the
container, not to resources").

Strings that still hold a placeholder (``'{{gpus}}'``, ``'${image_uri}'``) pass any
type check: at queue creation the template is not rendered yet, and submission
checks the rendered config again.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, NoReturn

from launchyard.errors import InvalidInputError, MissingDependencyError

PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_]\w*\s*\}\}|\$\{[A-Za-z_]\w*\}")
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
QUANTITY_MAPS = {"limits", "requests", "overhead", "capacity", "allocatable"}
QUANTITY_FIELDS = {"sizeLimit", "storage"}
FILLED_BY_LAUNCHYARD = {("V1Container", "name"), ("V1Container", "image")}
"""Required by the schema but filled in at launch (names, the run's image)."""
GPU_RESOURCE = "nvidia.com/gpu"

_NOUNS = {
    "V1Job": "the Job",
    "V1JobSpec": "the Job spec",
    "V1PodTemplateSpec": "the pod template",
    "V1PodSpec": "the pod spec",
    "V1Container": "the container",
    "V1ObjectMeta": "metadata",
    "V1Volume": "the volume",
}
_LIST = re.compile(r"(?:List|list)\[(?P<item>.+)\]")
_DICT = re.compile(r"(?:Dict\[str, (?P<a>.+)\]|dict\(str, (?P<b>.+)\))")


def models() -> Any:
    """The client's model module, imported only when a config is checked."""
    try:
        from kubernetes.client import models as k8s_models
    except ImportError as exc:
        raise MissingDependencyError(
            "checking a kubernetes queue needs the Kubernetes client: "
            "pip install 'launchyard[kubernetes]'"
        ) from exc
    return k8s_models


def fields_of(model: str) -> dict[str, str]:
    """JSON field name -> type string for one model class."""
    cls = getattr(models(), model)
    return {cls.attribute_map[attr]: type_ for attr, type_ in cls.openapi_types.items()}


def required_of(model: str) -> set[str]:
    """JSON names of the required fields (known from pydantic-generated clients only)."""
    cls = getattr(models(), model)
    found = getattr(cls, "model_fields", {})
    return {cls.attribute_map[a] for a, f in found.items() if f.is_required()} - {
        field for owner, field in FILLED_BY_LAUNCHYARD if owner == model
    }


def check_job(job: Any) -> None:
    """Raise InvalidInputError at the first place ``job`` breaks the ``batch/v1`` Job schema."""
    check_object(job, "V1Job")


def check_object(obj: Any, model: str) -> None:
    """The same check for any object, by model class name (``"V1PersistentVolume"``)."""
    _walk(obj, model, "", [])


def _walk(value: Any, type_: str, path: str, ancestors: list[tuple[str, str]]) -> None:
    if isinstance(value, str) and PLACEHOLDER.search(value):
        return  # filled at submission, checked again then
    if value is None:
        return
    if m := _LIST.fullmatch(type_):
        if not isinstance(value, list):
            _fail(path, f"expected a list, got {value!r}", "write it as a YAML list (- item)")
        for i, item in enumerate(value):
            _walk(item, m["item"], f"{path}[{i}]", ancestors)
    elif m := _DICT.fullmatch(type_):
        if not isinstance(value, dict):
            _fail(path, f"expected a mapping, got {value!r}", "write it as key: value pairs")
        quantities = path.rsplit(".", 1)[-1] in QUANTITY_MAPS
        for key, item in value.items():
            item_path = f"{path}[{key!r}]" if "." in str(key) else f"{path}.{key}"
            if quantities:
                _check_quantity(item, item_path, gpu=key == GPU_RESOURCE)
            else:
                _walk(item, m["a"] or m["b"], item_path, ancestors)
    elif type_ in ("str", "datetime", "date"):
        if path.rsplit(".", 1)[-1] in QUANTITY_FIELDS:
            _check_quantity(value, path, gpu=False)
        elif not isinstance(value, str):
            _fail(path, f"expected a string, got {value!r}", f"quote it: '{value}'")
    elif type_ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, f"expected a whole number, got {value!r}", "write a number, unquoted")
    elif type_ == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(path, f"expected a number, got {value!r}", "write a number, unquoted")
    elif type_ == "bool":
        if not isinstance(value, bool):
            _fail(path, f"expected true or false, got {value!r}", "write true or false")
    elif type_ in ("object", "Any"):
        return  # IntOrString and free-form fields
    else:
        _walk_model(value, type_, path, ancestors)


def _walk_model(value: Any, model: str, path: str, ancestors: list[tuple[str, str]]) -> None:
    where = path or "the config"
    if not isinstance(value, dict):
        _fail(where, f"expected a mapping ({model[2:]}), got {value!r}", "write key: value pairs")
    fields = fields_of(model)
    for key, item in value.items():
        item_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            _fail(
                item_path,
                f"unknown field {key!r} in {model[2:]}",
                _hint(str(key), model, path, ancestors),
            )
        _walk(item, fields[key], item_path, [(path, model), *ancestors])
    for key in sorted(required_of(model) - set(value)):
        _fail(
            f"{path}.{key}" if path else key,
            f"{model[2:]} requires {key!r}",
            f"add {key}: to {path or 'the config'}",
        )


def _hint(key: str, model: str, path: str, ancestors: list[tuple[str, str]]) -> str:
    fields = fields_of(model)
    here = path.rsplit(".", 1)[-1] or "the top level"
    camel = re.sub(r"_([a-z])", lambda m: m[1].upper(), key)
    if camel != key and camel in fields:
        return f"did you mean {camel!r}? Kubernetes fields are camelCase"
    for owner_path, owner in ancestors:  # placed too deep
        if key in fields_of(owner):
            owner_noun = _NOUNS.get(owner, owner_path or "the top level")
            at = f" ({owner_path})" if owner_path else ""
            return f"{key} belongs to {owner_noun}{at}, not to {here}"
    below = _find_below(key, model)  # placed too shallow
    if below is not None:
        return f"{key} belongs under {'.'.join(filter(None, [path, below]))}"
    close = difflib.get_close_matches(key, list(fields), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{here} accepts: {', '.join(sorted(fields))}"


def _find_below(key: str, model: str, depth: int = 3) -> str | None:
    """The nearest path under ``model`` whose object has field ``key`` (breadth first)."""
    frontier: list[tuple[str, str]] = [("", model)]
    for _ in range(depth):
        nxt = []
        for prefix, current in frontier:
            for name, type_ in fields_of(current).items():
                inner = _LIST.fullmatch(type_)
                target = inner["item"] if inner else type_
                if not target.startswith(("V1", "V2", "Core")):
                    continue
                sub = f"{prefix}.{name}" if prefix else name
                if inner:
                    sub += "[]"
                if key in fields_of(target):
                    return sub
                nxt.append((sub, target))
        frontier = nxt
    return None


def _check_quantity(value: Any, path: str, *, gpu: bool) -> None:
    if isinstance(value, str) and PLACEHOLDER.search(value):
        return
    if gpu:
        if isinstance(value, bool) or not re.fullmatch(r"\d+", str(value).strip()):
            _fail(
                path,
                f"{GPU_RESOURCE} must be a whole number of GPUs, got {value!r}",
                "write a count such as 1 or '{{gpus}}'",
            )
        return
    if isinstance(value, bool) or not QUANTITY.fullmatch(str(value).strip()):
        _fail(path, f"{value!r} is not a Kubernetes quantity", "write e.g. 4, 500m, 12Gi")


def _fail(path: str, problem: str, fix: str) -> NoReturn:
    raise InvalidInputError(f"{path}: {problem}; {fix}", fields={"path": path})
