"""Queues through the API, on SQLite and PostgreSQL: create, validate, change, delete."""

from __future__ import annotations

import pytest

from launchyard.errors import (
    ConfigSyntaxError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    TemplateError,
    VariableSchemaError,
)

GPU_VARS = {
    "gpus": {
        "description": "GPUs",
        "schema": {"type": "integer", "default": 1, "minimum": 0, "maximum": 4},
    }
}


def make_queue(c, name: str = "gpu", **extra):  # type: ignore[no-untyped-def]
    spec = {
        "name": name,
        "resource": "local",
        "config": "gpus: '{{gpus}}'\n",
        "variables": GPU_VARS,
        **extra,
    }
    return c.create_queue("default", spec)


def test_create_list_show_update_delete(server) -> None:  # type: ignore[no-untyped-def]
    c = server.client()
    q = make_queue(c)
    assert q["variables"]["gpus"]["schema"]["maximum"] == 4
    assert q["config"] == "gpus: '{{gpus}}'\n"  # the admin's text, verbatim
    assert [x["name"] for x in c.list_queues("default")] == ["gpu"]
    updated = c.update_queue("default", "gpu", {"config": "gpus: '{{gpus}}'\nenv: {A: b}\n"})
    assert updated["config_parsed"]["env"] == {"A": "b"}
    c.delete_queue("default", "gpu")
    with pytest.raises(NotFoundError, match="queues: none"):
        c.get_queue("default", "gpu")


@pytest.mark.parametrize(
    ("config", "variables", "error", "match"),
    [
        ("gpus: [1,\n", {}, ConfigSyntaxError, "line 2"),
        ("env:\n\tA: b\n", {}, ConfigSyntaxError, "tab"),
        ("env: {A: '${imge_uri}'}\n", {}, TemplateError, "unknown macro"),
        ("gpus: '{{gpu}}'\n", GPU_VARS, TemplateError, "not declared"),
        ("bogus: 1\n", {}, InvalidInputError, "cannot hold 'bogus'"),
        (
            "gpus: 1\n",
            {"gpus": {"schema": {"type": "integer", "minimum": 5, "maximum": 1}}},
            VariableSchemaError,
            "minimum",
        ),
        ("gpus: 1\n", {"gpus": {"schema": {"type": "float"}}}, VariableSchemaError, "float"),
    ],
)
def test_bad_queue_definitions_are_refused_and_nothing_is_written(  # type: ignore[no-untyped-def]
    server, config, variables, error, match
) -> None:
    c = server.client()
    with pytest.raises(error, match=match):
        c.create_queue("default", {"name": "q", "config": config, "variables": variables})
    assert c.list_queues("default") == []


def test_unknown_resource_lists_the_supported_ones(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match="resource 'slurmm' is not known"):
        sqlite_server.client().create_queue("default", {"name": "q", "resource": "slurmm"})


def test_duplicate_queue_conflicts(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    c = sqlite_server.client()
    make_queue(c)
    with pytest.raises(ConflictError, match="already exists"):
        make_queue(c)


def test_unknown_entity(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFoundError, match="entity 'nope' does not exist; entities: default"):
        sqlite_server.client().list_queues("nope")


def test_members_launch_but_only_admins_change_queues(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    admin = sqlite_server.client()
    make_queue(admin)
    key = admin.add_member("default", "alice", "member")["api_key"]
    alice = sqlite_server.client(key)
    with pytest.raises(PermissionDeniedError, match="needs the admin role"):
        alice.update_queue("default", "gpu", {"config": "gpus: 2\n"})
    with pytest.raises(PermissionDeniedError):
        make_queue(alice, name="mine")
    assert admin.get_queue("default", "gpu")["config"] == "gpus: '{{gpus}}'\n"
    run = alice.submit("default", {"queue": "gpu", "command": ["true"]})
    assert run["author"] == "alice"
    viewer = sqlite_server.client(admin.add_member("default", "victor", "viewer")["api_key"])
    with pytest.raises(PermissionDeniedError, match="needs the member role"):
        viewer.submit("default", {"queue": "gpu", "command": ["true"]})


def test_parse_configuration_lists_variables_and_macros(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    found = sqlite_server.client().parse_template(
        "image: ${image_uri}\nlimits: {nvidia.com/gpu: '{{gpus}}', mem: '{{mem}}Gi'}\n", GPU_VARS
    )
    assert found["variables"] == ["gpus", "mem"]
    assert found["macros"] == ["image_uri"]
    assert found["undeclared"] == ["mem"]
