"""Submitting runs, on SQLite and PostgreSQL: validation, rendering, jobs, cancel, logs."""

from __future__ import annotations

import pytest

from launchyard.errors import InvalidInputError, NotFoundError, TemplateError, VariableValueError

VARS = {
    "gpus": {"schema": {"type": "integer", "default": 1, "minimum": 0, "maximum": 4}},
    "size": {"schema": {"type": "string", "enum": ["sm", "md", "lg"], "default": "sm"}},
    "lr": {"schema": {"type": "number", "default": 0.1}},
}
CONFIG = "gpus: '{{gpus}}'\nenv:\n  SIZE: 'model-{{size}}'\n  LR: '{{lr}}'\n  WHO: '${author}'\n"


@pytest.fixture
def c(server):  # type: ignore[no-untyped-def]
    client = server.client()
    client.create_queue(
        "default", {"name": "gpu", "config": CONFIG, "variables": VARS, "priority": "enabled"}
    )
    return client


def test_submit_renders_typed_values_and_macros(c) -> None:  # type: ignore[no-untyped-def]
    run = c.submit(
        "default",
        {
            "queue": "gpu",
            "project": "p1",
            "command": ["python", "train.py"],
            "values": {"gpus": 2, "size": "lg"},
            "config": {"epochs": 3},
        },
    )
    assert run["state"] == "queued"
    assert run["resolved_config"] == {
        "gpus": 2,
        "env": {"SIZE": "model-lg", "LR": 0.1, "WHO": "admin"},
    }
    assert run["gpus"] == 2 and run["values"] == {"gpus": 2, "size": "lg", "lr": 0.1}
    shown = c.get_run(run["id"])
    assert shown["position"] == 1
    assert shown["waiting_reason"].startswith("no agent for this queue")
    assert [t["state"] for t in shown["transitions"]] == ["queued"]
    assert shown["job"] == "train" and shown["job_version"] == "v0"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"gpus": 9}, "9 is above the maximum 4"),
        ({"gpus": -1}, "below the minimum"),
        ({"gpus": "two"}, "not of type integer"),
        ({"size": "xl"}, "not one of"),
        ({"gpu": 1}, "unknown variable 'gpu'"),
    ],
)
def test_values_breaking_the_rules_are_refused_with_nothing_written(  # type: ignore[no-untyped-def]
    c, values, match
) -> None:
    with pytest.raises(VariableValueError, match=match):
        c.submit("default", {"queue": "gpu", "command": ["true"], "values": values})
    assert c.list_runs("default")["runs"] == []
    assert c.list_jobs("default", "uncategorized") == [] if _has_project(c) else True


def _has_project(c) -> bool:  # type: ignore[no-untyped-def]
    try:
        c.list_jobs("default", "uncategorized")
    except NotFoundError:
        return False
    return True


def test_unknown_queue_and_missing_command(c) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFoundError, match="queue 'nope' does not exist.*queues: gpu"):
        c.submit("default", {"queue": "nope", "command": ["true"]})
    with pytest.raises(InvalidInputError, match="needs a docker or kubernetes queue"):
        c.submit("default", {"queue": "gpu", "image": "busybox"})


def test_image_macro_without_an_image_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    client = server.client()
    client.create_queue("default", {"name": "q", "config": "env: {IMG: '${image_uri}'}\n"})
    with pytest.raises(TemplateError, match="image_uri"):
        client.submit("default", {"queue": "q", "command": ["true"]})


def test_run_env_cannot_override_the_queue_env(c) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match="env SIZE: the queue's config sets it"):
        c.submit("default", {"queue": "gpu", "command": ["true"], "env": {"SIZE": "x"}})


def test_priority_then_fifo_positions(c) -> None:  # type: ignore[no-untyped-def]
    a = c.submit("default", {"queue": "gpu", "command": ["true"]})
    b = c.submit("default", {"queue": "gpu", "command": ["true"], "priority": "high"})
    assert c.get_run(b["id"])["position"] == 1
    assert c.get_run(a["id"])["position"] == 2


def test_jobs_version_alias_and_relaunch_with_overrides(c) -> None:  # type: ignore[no-untyped-def]
    c.submit(
        "default",
        {
            "queue": "gpu",
            "project": "p",
            "command": ["python", "train.py"],
            "values": {"size": "md"},
            "config": {"epochs": 1},
        },
    )
    c.submit("default", {"queue": "gpu", "project": "p", "command": ["python", "train.py", "--v2"]})
    job = c.get_job("default", "p", "train")
    assert [v["version"] for v in job["versions"]] == ["v0", "v1"]
    assert job["aliases"] == {"latest": "v1"}
    c.alias_job("default", "p", "train", "v0", "main")
    run = c.submit(
        "default",
        {
            "queue": "gpu",
            "project": "p",
            "job": "train:main",
            "values": {"gpus": 2},
            "config": {"lr_scale": 2},
        },
    )
    assert run["command"] == ["python", "train.py"]
    assert run["job_version"] == "v0"
    assert run["values"]["size"] == "md" and run["values"]["gpus"] == 2
    assert run["config"] == {"epochs": 1, "lr_scale": 2}
    with pytest.raises(NotFoundError, match="no alias 'nope'"):
        c.submit("default", {"queue": "gpu", "project": "p", "job": "train:nope"})


def test_cancel_a_queued_run_at_once(c) -> None:  # type: ignore[no-untyped-def]
    run = c.submit("default", {"queue": "gpu", "command": ["true"]})
    assert c.cancel(run["id"])["state"] == "cancelled"
    assert c.cancel(run["id"])["state"] == "cancelled"  # idempotent


def test_idempotency_key_creates_one_run(c) -> None:  # type: ignore[no-untyped-def]
    body = {"queue": "gpu", "command": ["true"], "idempotency_key": "retry-1"}
    assert c.submit("default", body)["id"] == c.submit("default", body)["id"]
    assert len(c.list_runs("default")["runs"]) == 1


def test_list_pages_with_a_cursor(c) -> None:  # type: ignore[no-untyped-def]
    ids = [c.submit("default", {"queue": "gpu", "command": ["true"]})["id"] for _ in range(5)]
    first = c.list_runs("default", limit=3)
    rest = c.list_runs("default", limit=3, before=first["next_cursor"])
    assert [r["id"] for r in first["runs"] + rest["runs"]] == ids[::-1]
    assert rest["next_cursor"] is None
    with pytest.raises(InvalidInputError, match="not a run state"):
        c.list_runs("default", state="bogus")


def test_batch_submission_is_all_or_nothing(c) -> None:  # type: ignore[no-untyped-def]
    ok = {"queue": "gpu", "command": ["true"]}
    runs = c.submit_many("default", [ok, {**ok, "values": {"gpus": 2}}])
    assert [r["gpus"] for r in runs] == [1, 2] and len({r["id"] for r in runs}) == 2
    with pytest.raises(VariableValueError, match=r"runs\[1\]: .*maximum 4.*nothing was queued"):
        c.submit_many("default", [ok, {**ok, "values": {"gpus": 9}}])
    assert len(c.list_runs("default")["runs"]) == 2


def test_a_submitted_run_is_stored_as_answered(server, c) -> None:  # type: ignore[no-untyped-def]
    """The submit path writes the run with one Core INSERT: what it answers is what is stored,
    names included, and columns it leaves unset stay SQL NULL (not JSON null)."""
    from sqlalchemy import select

    from launchyard.server.tables import RunRow

    named = c.submit("default", {"queue": "gpu", "command": ["true"], "name": "sweep-7"})
    unnamed = c.submit("default", {"queue": "gpu", "command": ["true"]})
    assert named["name"] == "sweep-7" and unnamed["name"] == unnamed["id"]
    detail_only = ("position", "waiting_reason", "transitions")
    for run in (named, unnamed):
        shown = c.get_run(run["id"])
        assert {k: v for k, v in shown.items() if k not in detail_only} == {
            k: v for k, v in run.items() if k not in detail_only
        }
    db = server.http.app.state.launchyard.db
    with db.session() as sess:
        assert sess.scalar(
            select(RunRow.id).where(RunRow.handle.is_(None), RunRow.id == named["id"])
        )


def test_a_refused_submit_leaves_nothing_behind_for_the_next(c) -> None:  # type: ignore[no-untyped-def]
    """Entities and projects are kept across requests, but only once committed: a project
    created by a submit that was then refused (rolled back) is created again by the next."""
    bad = {"queue": "gpu", "project": "fresh", "command": ["true"], "values": {"gpus": 9}}
    for _ in range(2):
        with pytest.raises(VariableValueError):
            c.submit("default", bad)
    run = c.submit("default", {**bad, "values": {"gpus": 1}})
    assert run["project"] == "fresh" and run["entity"] == "default"
    assert c.submit("default", {**bad, "values": {"gpus": 2}})["project"] == "fresh"
