"""Fuzzing the server with schemathesis from its own OpenAPI spec: no 5xx, no response
that breaks the spec, for a bounded number of generated requests per operation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from tests.e2e.conftest import LiveServer  # noqa: E402

from reliability.conftest import REPORT  # noqa: E402

EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz"))
    server.start()
    c = server.client()
    c.create_queue(
        "default",
        {
            "name": "gpu",
            "config": "gpus: '{{gpus}}'\n",
            "variables": {
                "gpus": {"schema": {"type": "integer", "default": 0, "minimum": 0, "maximum": 4}}
            },
        },
    )
    c.submit("default", {"queue": "gpu", "project": "p", "command": ["true"]})
    yield server
    server.stop()


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server: LiveServer):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(f"{fuzz_server.host}/openapi.json")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_spec(case, fuzz_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    response = case.call(headers={"Authorization": f"Bearer {fuzz_server.key}"}, timeout=30)
    REPORT["fuzz: requests sent"] += 1
    REPORT[f"fuzz: {response.status_code // 100}xx answers"] += 1
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
