"""The connection to the cluster and the boundary where its errors become ours.

Every call goes through :func:`call`: it asks for the raw response
(``_preload_content=False``) and returns the JSON the API server sent, so the rest
of the backend works on plain dicts (serialisable, easy to test) and never depends
on how a client version deserialises models. An ``ApiException`` or a dropped
connection never leaves this module: it becomes a :mod:`launchyard.errors` error
whose message says what to check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launchyard.errors import (
    BackendError,
    ConflictError,
    InvalidInputError,
    LaunchyardError,
    MissingDependencyError,
    NotFoundError,
)

REQUEST_TIMEOUT_S = (5.0, 30.0)
"""(connect, read) for ordinary calls; watches set their own."""
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
INSTALL_HINT = "pip install 'launchyard[kubernetes]'"


class GoneError(BackendError):
    """410 Gone: a watch's resourceVersion is too old; list again."""


def sdk() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise MissingDependencyError(
            f"the kubernetes backend needs the Kubernetes client: {INSTALL_HINT}"
        ) from exc
    return kubernetes


def connect(options: dict[str, Any]) -> tuple[Any, str]:
    """An ``ApiClient`` and the namespace, from the agent's ``backends.kubernetes`` options.

    ``in_cluster: true`` (or, when unset, running in a pod with no kubeconfig given) uses
    the pod's service account; otherwise ``kubeconfig`` (default ``~/.kube/config`` or
    ``$KUBECONFIG``) and ``context`` (default: the current one).
    """
    k8s = sdk()
    kubeconfig = options.get("kubeconfig")
    context = options.get("context")
    in_cluster = options.get("in_cluster")
    if in_cluster is None:
        in_cluster = (
            not kubeconfig
            and not context
            and "KUBERNETES_SERVICE_HOST" in os.environ
            and not os.environ.get("KUBECONFIG")
        )
    try:
        if in_cluster:
            configuration = k8s.client.Configuration()
            k8s.config.load_incluster_config(client_configuration=configuration)
            api_client = k8s.client.ApiClient(configuration)
            default_ns = _read(SERVICE_ACCOUNT_NAMESPACE) or "default"
        else:
            path = str(Path(kubeconfig).expanduser()) if kubeconfig else None
            api_client = k8s.config.new_client_from_config(
                config_file=path, context=context, persist_config=False
            )
            default_ns = _context_namespace(k8s, path, context)
    except (k8s.config.ConfigException, OSError, TypeError, ValueError) as exc:
        where = "the pod's service account" if in_cluster else (kubeconfig or "~/.kube/config")
        raise BackendError(
            f"cannot load the Kubernetes configuration from {where}"
            f"{f' (context {context!r})' if context else ''}: {exc}; set backends.kubernetes."
            "kubeconfig/context in the agent config, or in_cluster: true inside a cluster"
        ) from exc
    return api_client, str(options.get("namespace") or default_ns)


def _context_namespace(k8s: Any, path: str | None, context: str | None) -> str:
    contexts, current = k8s.config.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def call(fn: Callable[..., Any], *args: Any, what: str, raw: bool = False, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` against the API; the answer's JSON (bytes with ``raw``)."""
    k8s = sdk()
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
    try:
        response = fn(*args, _preload_content=False, **kwargs)
        data = response.data
    except k8s.client.ApiException as exc:
        raise translate(exc, what) from exc
    except Exception as exc:  # urllib3 and socket errors: the API is unreachable
        raise unreachable(exc, what) from exc
    if raw:
        return bytes(data)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise BackendError(f"{what}: the Kubernetes API answered something not JSON") from exc


def translate(exc: Any, what: str) -> LaunchyardError:
    """An ``ApiException`` as the launchyard error a caller can act on."""
    status = int(getattr(exc, "status", 0) or 0)
    message = status_message(exc)
    if status == 404:
        return NotFoundError(f"{what}: {message}")
    if status == 409:
        return ConflictError(f"{what}: {message}")
    if status == 410:
        return GoneError(f"{what}: {message}")
    if status in (400, 422):
        return InvalidInputError(f"{what}: the Kubernetes API refused it: {message}")
    if status in (401, 403):
        return BackendError(
            f"{what}: the Kubernetes API answered {status} ({message}); check the agent's "
            "credentials and that its Role allows jobs, pods, pods/log and configmaps "
            "(deploy/helm/launchyard-agent)"
        )
    return BackendError(f"{what}: the Kubernetes API answered {status or 'an error'}: {message}")


def unreachable(exc: BaseException, what: str) -> BackendError:
    return BackendError(f"{what}: cannot reach the Kubernetes API: {exc}")


def status_message(exc: Any) -> str:
    """The ``message`` of the ``Status`` body, else the HTTP reason."""
    body = getattr(exc, "body", None)
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("message"):
        return str(parsed["message"])
    return str(getattr(exc, "reason", None) or exc)
