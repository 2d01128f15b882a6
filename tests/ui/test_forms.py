"""The web UI's forms refuse what the API refuses, in its words, and offer only allowed actions."""

from __future__ import annotations

import re

from tests.conftest import ServerHarness
from tests.ui.conftest import login, make_queue

GOOD_ROW = {
    "var.gpus.type": "integer",
    "var.gpus.default": "1",
    "var.gpus.minimum": "0",
    "var.gpus.maximum": "4",
    "var.gpus.description": "GPUs per run",
}


def create(ui: ServerHarness, **fields: str) -> object:
    form = {"entity": "default", "name": "gpu", "resource": "local", "config": "gpus: '{{gpus}}'\n"}
    return ui.http.post("/ui/queues", data={**form, **fields}, follow_redirects=False)


def error_of(html: str) -> str:
    match = re.search(r'<div class="error" role="alert">(.*?)</div>', html, re.S)
    assert match, "no error box on the page"
    return re.sub(r"<[^>]+>|\s+", " ", match.group(1)).replace("&#39;", "'").strip()


def test_parse_lists_variables_as_the_api_does_and_keeps_typed_rows(ui: ServerHarness) -> None:
    config = "gpus: '{{gpus}}'\nenv: {TAG: '${run_id}-{{size}}'}\n"
    mine = ui.http.post(
        "/ui/api/templates/parse",
        json={"config": config, "rows": {"gpus": {"type": "integer", "maximum": "4"}}},
    ).json()
    api = ui.client().parse_template(config, {})
    assert mine["variables"] == api["variables"] == ["gpus", "size"]
    assert mine["macros"] == api["macros"] == ["run_id"]
    assert 'name="var.gpus.maximum" value="4"' in mine["rows_html"]
    assert "<option selected>integer</option>" in mine["rows_html"]
    assert 'data-var="size"' in mine["rows_html"]


def test_parse_errors_carry_line_and_column_like_the_api(ui: ServerHarness) -> None:
    bad = "gpus: 1\nenv: {A: 1\n"
    mine = ui.http.post("/ui/api/templates/parse", json={"config": bad})
    api = ui.http.post(
        "/api/v1/templates/parse",
        json={"config": bad},
        headers={"Authorization": f"Bearer {ui.admin_key}"},
    )
    assert mine.status_code == api.status_code == 422
    assert mine.json() == api.json()
    assert mine.json()["error"]["fields"]["line"] == 3
    macro = ui.http.post("/ui/api/templates/parse", json={"config": "a: '${runid}'"}).json()
    assert "did you mean ${run_id}" in macro["error"]["message"]
    row = ui.http.post(
        "/ui/api/templates/parse",
        json={"config": "a: '{{n}}'", "rows": {"n": {"type": "integer", "default": "two"}}},
    ).json()
    assert row["error"]["message"] == "variable 'n': default 'two' is not an integer"


def test_create_queue_form_refuses_like_the_api_and_keeps_the_input(ui: ServerHarness) -> None:
    syntax = create(ui, config="gpus: [1\nenv: 2\n")
    assert syntax.status_code == 422
    assert "line 2, column 4" in error_of(syntax.text)
    assert "gpus: [1" in syntax.text  # the textarea keeps what was typed

    too_big = create(ui, **{**GOOD_ROW, "var.gpus.default": "9"})
    assert too_big.status_code == 422
    assert error_of(too_big.text).endswith(
        "variable 'gpus': default 9 is above the maximum 4 (allowed 0–4)"
    )
    assert 'name="var.gpus.description" value="GPUs per run"' in too_big.text

    undeclared = create(ui)
    assert "config uses {{gpus}} but it is not declared" in error_of(undeclared.text)
    bad_name = create(ui, **GOOD_ROW, name="no spaces")
    assert "queue name 'no spaces' is not valid" in error_of(bad_name.text)
    assert ui.client().list_queues("default") == []

    ok = create(ui, **GOOD_ROW, priority="on")
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/e/default/queues/gpu"
    queue = ui.client().get_queue("default", "gpu")
    assert queue["variables"]["gpus"] == {
        "description": "GPUs per run",
        "schema": {"type": "integer", "default": 1, "minimum": 0, "maximum": 4},
    }
    assert queue["priority"] is True and queue["config"] == "gpus: '{{gpus}}'\n"
    again = create(ui, **GOOD_ROW)
    assert again.status_code == 409 and "already exists" in error_of(again.text)


def test_enum_rows_become_enums_of_the_declared_type(ui: ServerHarness) -> None:
    rows = {
        "var.size.type": "string",
        "var.size.enum": "sm, md ,lg",
        "var.size.default": "md",
        "var.n.type": "integer",
        "var.n.enum": "1,2,4",
        "var.n.default": "2",
    }
    response = create(ui, config="env: {A: '{{size}}', B: '{{n}}'}\n", **rows)
    assert response.status_code == 303, error_of(response.text)
    variables = ui.client().get_queue("default", "gpu")["variables"]
    assert variables["size"]["schema"]["enum"] == ["sm", "md", "lg"]
    assert variables["n"]["schema"] == {"type": "integer", "enum": [1, 2, 4], "default": 2}


def launch(ui: ServerHarness, **fields: str) -> object:
    form = {"queue": "gpu", "version": "latest", "command": "python train.py"}
    return ui.http.post(
        "/ui/e/default/projects/vision/jobs/train/launch",
        data={**form, **fields},
        follow_redirects=False,
    )


def seed_job(ui: ServerHarness, **values: object) -> str:
    make_queue(ui.client(), priority=True)
    run = ui.client().submit(
        "default",
        {
            "queue": "gpu",
            "project": "vision",
            "command": ["python", "train.py"],
            "values": values,
            "priority": "high",
        },
    )
    return str(run["id"])


def test_the_launch_drawer_follows_the_queue_variables_and_the_last_run(ui: ServerHarness) -> None:
    seed_job(ui, gpus=3, size="lg")
    page = ui.http.get("/ui/e/default/projects/vision/jobs/train").text
    gpus = re.search(r'<input id="[^"]*gpus" name="v\.gpu\.gpus"[^>]*>', page, re.S)
    assert gpus is not None
    tag = " ".join(gpus.group(0).split())
    for attribute in ('value="3"', 'type="number"', 'step="1"', 'min="0"', 'max="4"'):
        assert attribute in tag, (attribute, tag)
    size = re.search(r'name="v\.gpu\.size">(.*?)</select>', page, re.S)
    assert size and "<option selected>lg</option>" in size.group(1)
    assert "<option selected>high</option>" in page  # priority of the last run
    assert 'value="python train.py"' in page


def test_the_launch_form_refuses_what_the_api_refuses(ui: ServerHarness) -> None:
    seed_job(ui)
    cases = {
        "v.gpu.gpus": ("9", "variable 'gpus': 9 is above the maximum 4 (allowed 0–4)"),
        "v.gpu.size": ("xl", "variable 'size': 'xl' is not one of 'sm', 'md', 'lg'"),
    }
    for field, (value, message) in cases.items():
        response = launch(ui, **{field: value})
        assert response.status_code == 422
        assert error_of(response.text).endswith(message)
        if field == "v.gpu.gpus":  # what was typed stays in the field
            assert 'value="9"' in response.text
        assert '<details class="drawer panel" id="launch" open>' in response.text
    word = launch(ui, **{"v.gpu.gpus": "two"})
    assert error_of(word.text).endswith("variable 'gpus': 'two' is not an integer")
    quote = launch(ui, command="python 'unclosed")
    assert "quote it as in a shell" in error_of(quote.text)
    missing = launch(ui, queue="nope")
    assert "queue 'nope' is not one of: gpu" in error_of(missing.text)
    assert len(ui.client().list_runs("default")["runs"]) == 1  # nothing was submitted


def test_the_launch_form_submits_through_the_runs_service(ui: ServerHarness) -> None:
    seed_job(ui)
    response = launch(
        ui,
        **{"v.gpu.gpus": "2", "v.gpu.size": "", "priority.gpu": "critical", "name": "try-2"},
        command="python train.py --lr 0.1",
    )
    assert response.status_code == 303
    run_id = response.headers["location"].rsplit("/", 1)[-1]
    run = ui.client().get_run(run_id)
    assert run["values"] == {"gpus": 2, "size": "sm"}  # an empty field takes the default
    assert run["command"] == ["python", "train.py", "--lr", "0.1"]
    assert (run["job"], run["job_version"], run["priority"], run["name"]) == (
        "train",
        "v0",
        "critical",
        "try-2",
    )
    page = ui.http.get(response.headers["location"])
    assert page.status_code == 200 and "Relaunch with changes" in page.text


def test_the_launch_form_carries_a_time_limit_to_the_run_page(ui: ServerHarness) -> None:
    seed_job(ui)
    bad = launch(ui, time_limit="soon")
    assert bad.status_code == 422
    assert "time_limit 'soon' is not a duration" in error_of(bad.text)
    assert 'value="soon"' in bad.text  # what was typed stays in the field
    response = launch(ui, time_limit="1h30m")
    assert response.status_code == 303
    run = ui.client().get_run(response.headers["location"].rsplit("/", 1)[-1])
    assert run["time_limit_s"] == 5400
    page = ui.http.get(response.headers["location"]).text
    assert "<dt>Time limit</dt><dd>1h 30m</dd>" in page
    assert 'name="time_limit" value="5400s"' in page  # the relaunch drawer starts from it


def test_alias_and_rename_go_through_the_job_services(ui: ServerHarness) -> None:
    seed_job(ui)
    base = "/ui/e/default/projects/vision/jobs/train"
    ok = ui.http.post(base + "/alias", data={"alias": "main", "version": "v0"})
    assert ok.status_code == 200 and "alias &#39;main&#39; now points at v0" in ok.text
    assert ok.history[0].status_code == 303  # reloading the page posts nothing again
    assert ui.client().get_job("default", "vision", "train")["aliases"]["main"] == "v0"
    bad = ui.http.post(base + "/alias", data={"alias": "latest", "version": "v0"})
    assert bad.status_code == 422 and "always follows the newest" in error_of(bad.text)

    renamed = ui.http.post(base + "/rename", data={"new_name": "trainer"}, follow_redirects=False)
    assert renamed.headers["location"] == "/ui/e/default/projects/vision/jobs/trainer"
    job = ui.client().get_job("default", "vision", "trainer")
    assert job["aliases"] == {"latest": "v0", "main": "v0"}
    run = ui.client().list_runs("default")["runs"][0]
    assert run["job"] == "trainer"  # the history follows the job
    assert ui.http.get(base).status_code == 404
    ui.client().submit(
        "default", {"queue": "gpu", "project": "vision", "command": ["python", "other.py"]}
    )
    taken = ui.http.post(
        "/ui/e/default/projects/vision/jobs/other/rename", data={"new_name": "trainer"}
    )
    assert taken.status_code == 409 and "already exists" in error_of(taken.text)


def test_a_viewer_sees_the_pages_but_no_action_the_api_would_refuse(ui: ServerHarness) -> None:
    run_id = seed_job(ui)
    key = ui.client().add_member("default", "vera", "viewer")["api_key"]
    login(ui, key)
    pages = {
        "/ui/queues": "Create a queue",
        f"/ui/runs/{run_id}": "cancel-run",
        "/ui/e/default/projects/vision/jobs/train": 'id="launch"',
    }
    for path, action in pages.items():
        page = ui.http.get(path)
        assert page.status_code == 200 and "vera" in page.text
        assert action not in page.text, path
    assert "Rename the job" not in ui.http.get("/ui/e/default/projects/vision/jobs/train").text
    refused = ui.http.post(f"/ui/runs/{run_id}/cancel")
    assert refused.status_code == 403
    assert "needs the member role in entity 'default'; user 'vera' is viewer" in error_of(
        refused.text
    )
    assert launch(ui).status_code == 403
    assert create(ui, **GOOD_ROW).status_code == 403
    assert ui.client().get_run(run_id)["state"] == "queued"


def test_a_member_of_another_entity_sees_none_of_its_data(ui: ServerHarness) -> None:
    run_id = seed_job(ui)
    admin = ui.client()
    admin.create_entity("other")
    key = admin.add_member("other", "olga", "admin")["api_key"]
    login(ui, key)
    queues = ui.http.get("/ui/queues").text
    assert "Entity <code>other</code>" in queues and "default" not in queues
    assert ui.http.get(f"/ui/runs/{run_id}").status_code == 404
    assert ui.http.get("/ui/e/default/queues/gpu").status_code == 403
    assert ui.http.get(f"/ui/api/runs/{run_id}/live").status_code == 404
    assert ui.http.get(f"/ui/runs/{run_id}/logs.txt").status_code == 404
    assert "train" not in ui.http.get("/ui/projects").text
