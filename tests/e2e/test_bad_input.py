"""Bad input through the CLI: one red line, a non-zero exit, and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.e2e.conftest import GPU_QUEUE, LiveServer, write

ENUM_QUEUE = (
    GPU_QUEUE
    + """\
  size:
    schema: {type: string, enum: [sm, md, lg], default: sm}
"""
)


def assert_refused(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def server(live_server: LiveServer, tmp_path: Path) -> LiveServer:
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "q.yaml", ENUM_QUEUE)))
    return live_server


@pytest.mark.parametrize(
    ("queue_file", "needles"),
    [
        ("name: q\nconfig:\n  gpus: [1,\n", ("line", "column")),
        ("name: q\nconfig:\n\tgpus: 1\n", ("tab",)),
        ("name: q\nconfig: {env: {A: '${imge_uri}'}}\n", ("unknown macro", "${image_uri}")),
        ("name: q\nconfig: {gpus: '{{gpus}}'}\n", ("{{gpus}}", "not declared")),
    ],
)
def test_bad_queue_files(
    server: LiveServer, tmp_path: Path, queue_file: str, needles: tuple[str, ...]
) -> None:
    result = server.cli(
        "queue", "create", "-f", str(write(tmp_path / "bad.yaml", queue_file)), check=False
    )
    assert_refused(result, *needles)
    assert [q["name"] for q in server.client().list_queues("default")] == ["gpu"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "gpus=9"], ("gpus", "9", "maximum 4")),
        (["--set", "gpus=two"], ("gpus", "'two'", "integer")),
        (["--set", "size=xl"], ("size", "'xl'", "not one of")),
        (["--set", "gpu=1"], ("unknown variable 'gpu'", "did you mean 'gpus'")),
        (["--set", "gpus"], ("NAME=VALUE",)),
        (["--time-limit", "soon"], ("time_limit 'soon' is not a duration", "1h30m")),
        (["--time-limit", "0"], ("time_limit '0'", "more than 0 s")),
    ],
)
def test_bad_values(server: LiveServer, args: list[str], needles: tuple[str, ...]) -> None:
    result = server.cli("launch", "-q", "gpu", *args, "--", "true", check=False)
    assert_refused(result, *needles)
    assert server.client().list_runs("default")["runs"] == []


def test_unknown_queue_and_entity(server: LiveServer) -> None:
    assert_refused(
        server.cli("launch", "-q", "nope", "--", "true", check=False),
        "queue 'nope' does not exist",
        "queues: gpu",
    )
    assert_refused(
        server.cli("launch", "-q", "gpu", "-e", "nobody", "--", "true", check=False),
        "entity 'nobody' does not exist",
    )
    assert server.client().list_runs("default")["runs"] == []


def test_missing_and_wrong_api_keys(server: LiveServer) -> None:
    assert_refused(server.cli("queue", "list", key="", check=False), "no API key")
    assert_refused(server.cli("queue", "list", key="ly_not-a-key", check=False), "not valid")


def test_a_member_cannot_change_a_queue(server: LiveServer, tmp_path: Path) -> None:
    out = server.cli("entities", "add-member", "default", "mia", "--role", "member", "--json")
    key = json.loads(out.stdout)["api_key"]
    changed = write(tmp_path / "changed.yaml", GPU_QUEUE.replace("maximum: 4", "maximum: 8"))
    assert_refused(
        server.cli("queue", "update", "gpu", "-f", str(changed), key=key, check=False),
        "needs the admin role",
        "'mia' is member",
    )
    assert (
        server.client().get_queue("default", "gpu")["variables"]["gpus"]["schema"]["maximum"] == 4
    )
    ok = server.cli("launch", "-q", "gpu", "--set", "gpus=1", "--", "true", key=key)
    assert ok.stdout.strip()


def test_usage_errors_exit_2(server: LiveServer) -> None:
    result = server.cli("launch", "--bogus-flag", check=False)
    assert result.returncode == 2


def test_queue_parse_lists_variables_and_macros(server: LiveServer, tmp_path: Path) -> None:
    config = write(
        tmp_path / "job.yaml",
        "spec:\n  template:\n    spec:\n      containers:\n"
        "        - image: ${image_uri}\n          resources:\n"
        "            limits: {nvidia.com/gpu: '{{gpus}}'}\n",
    )
    out = json.loads(server.cli("queue", "parse", str(config), "--json").stdout)
    assert out == {"variables": {"gpus": "undeclared"}, "macros": ["image_uri"]}
    out = json.loads(server.cli("queue", "parse", str(tmp_path / "q.yaml"), "--json").stdout)
    assert out["variables"]["gpus"]["maximum"] == 4
