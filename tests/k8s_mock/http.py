"""The HTTP side of the mock API server: routes, Status errors, chunked watch streams.

Speaks the subset of the Kubernetes REST API the backend uses, the way the real
API server answers it: objects as JSON, ``Status`` bodies for errors, and watches
as a chunked stream of one JSON event per line, with ``resourceVersion`` resumption,
bookmarks-free, and an ``ERROR`` event carrying ``410 Expired`` for a compacted
resource version.
"""

from __future__ import annotations

import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from k8s_mock.store import KINDS, ApiError

if TYPE_CHECKING:
    from k8s_mock.cluster import MockKubernetes

_ROUTE = re.compile(
    r"/(?:api/v1|apis/batch/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?P<log>/log)?"
)


class MockHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, cluster: MockKubernetes) -> None:
        self.cluster = cluster
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MockHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.cluster.connections.add(self.connection)

    def finish(self) -> None:
        self.server.cluster.connections.discard(self.connection)
        super().finish()

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        cluster = self.server.cluster
        body = self._body() if method in ("POST", "DELETE", "PATCH") else None
        cluster.requests.append((method, url.path, query, body))
        try:
            if cluster.token and self.headers.get("Authorization") != f"Bearer {cluster.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if url.path.rstrip("/") == "/version":
                return self._send(
                    200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-launchyard-mock"}
                )
            if url.path == "/api/v1/nodes" and method == "GET":
                return self._send(
                    200,
                    {
                        "kind": "NodeList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"},
                        "items": cluster.nodes,
                    },
                )
            if url.path == "/apis/apps/v1/daemonsets" and method == "GET":
                return self._send(
                    200,
                    {
                        "kind": "DaemonSetList",
                        "apiVersion": "apps/v1",
                        "metadata": {"resourceVersion": "1"},
                        "items": cluster.daemon_sets,
                    },
                )
            route = _ROUTE.fullmatch(url.path)
            if route is None or route["kind"] not in KINDS:
                raise ApiError(404, "NotFound", f"the server could not find {url.path}")
            self._dispatch(
                method, route["ns"], route["kind"], route["name"], bool(route["log"]), query, body
            )
        except ApiError as exc:
            self._send(exc.code, exc.status())

    def _dispatch(
        self,
        method: str,
        ns: str,
        kind: str,
        name: str | None,
        log: bool,
        query: dict[str, str],
        body: Any,
    ) -> None:
        store = self.server.cluster.store
        if log and method == "GET" and kind == "pods" and name:
            return self._send(200, self.server.cluster.read_log(ns, name, query), "text/plain")
        if name is None and method == "GET":
            if query.get("watch") in ("true", "1"):
                return self._watch(ns, kind, query)
            items, rv = store.list(kind, ns, query.get("labelSelector"))
            api_version, kind_name, _ = KINDS[kind]
            return self._send(
                200,
                {
                    "apiVersion": api_version,
                    "kind": f"{kind_name}List",
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )
        if name is None and method == "POST":
            return self._send(201, store.create(kind, ns, body or {}))
        if name and method == "GET":
            return self._send(200, store.get(kind, ns, name))
        if name and method == "DELETE":
            policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy")
            return self._send(200, store.delete(kind, ns, name, policy))
        if name and method == "PATCH":
            return self._send(200, store.update(kind, ns, name, lambda o: _merge(o, body)))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {self.path}")

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    # -- watches ---------------------------------------------------------------------------

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, ns: str, kind: str, query: dict[str, str]) -> None:
        cluster, store = self.server.cluster, self.server.cluster.store
        selector = query.get("labelSelector")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        rv_text = query.get("resourceVersion") or "0"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        generation = cluster.drop_generation
        cluster.watches_started += 1
        with store.cond:
            if rv_text == "0":  # "any version": the current objects first, as ADDED events
                items, after = store.list(kind, ns, selector)
                pending = [(int(o["metadata"]["resourceVersion"]), "ADDED", o) for o in items]
            else:
                after, pending = int(rv_text), []
        try:
            while not cluster.stopping:
                if cluster.drop_generation != generation:  # test hook: cut the connection
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                for rv, type_, obj in pending:
                    self._chunk({"type": type_, "object": obj})
                    after = max(after, rv)
                with store.cond:
                    try:
                        pending = store.watch_events(kind, ns, selector, after)
                    except ApiError as exc:
                        self._chunk({"type": "ERROR", "object": exc.status()})
                        break
                    if not pending:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        store.cond.wait(min(remaining, 0.2))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError, ApiError):
            self.close_connection = True


def _merge(target: dict[str, Any], patch: Any) -> None:
    """JSON merge patch (RFC 7386), which also covers the backend's strategic-merge uses."""
    for key, value in (patch or {}).items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
