"""The web UI in a real headless Chromium against real server and agent processes.

Each test saves a full-page screenshot of every page it visits into its tmp folder
(``screenshots/``; copied to ``$LAUNCHYARD_TEST_ARTIFACTS`` when that is set).
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path
from typing import Any

from tests.e2e.conftest import LiveServer, wait_until
from tests.ui.conftest import Browser

# One line (an <input> holds no newline): prints N steps 0.4 s apart, then keeps an image
# as an output by writing it into LAUNCHYARD_OUTPUT_DIR (the agent uploads it).
STEPS = (
    "import os, shutil, sys, time; [print(f'step {i}', flush=True) or time.sleep(0.4) "
    "for i in range(int(sys.argv[2]))]; "
    "shutil.copy(sys.argv[1], os.path.join(os.environ['LAUNCHYARD_OUTPUT_DIR'], 'sample.png')); "
    "print('done', flush=True)"
)


def write_png(path: Path, size: int = 96) -> Path:
    """A small RGB gradient, so the screenshot shows a real picture."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(size) for v in (x * 255 // size, y * 255 // size, 170))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


QUEUE_VARIABLES = {
    "gpus": {
        "description": "GPUs per run",
        "schema": {"type": "integer", "default": 1, "minimum": 0, "maximum": 4},
    }
}


def by(kind: str, value: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return {"id": By.ID, "css": By.CSS_SELECTOR, "name": By.NAME}[kind], value


def find(browser: Browser, kind: str, value: str) -> Any:
    return browser.driver.find_element(*by(kind, value))


def text_of(browser: Browser, kind: str, value: str) -> str:
    """Text of the first match, read in one step (live parts are replaced every 2 s)."""
    selector = f"#{value}" if kind == "id" else value
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''"
    return str(browser.driver.execute_script(script, selector))


def fill(element: Any, text: str) -> None:
    element.clear()
    element.send_keys(text)


def log_in(browser: Browser, live: LiveServer, path: str = "/ui/queues") -> None:
    browser.driver.get(live.host + path)
    wait_until(lambda: "/ui/login" in browser.driver.current_url, 10)
    fill(find(browser, "id", "api_key"), live.key)
    find(browser, "css", "form button[type=submit]").click()
    wait_until(lambda: browser.driver.current_url.endswith(path), 10)


def test_log_in_and_create_a_queue_with_parse_configuration(
    live: LiveServer, browser: Browser
) -> None:
    from selenium.webdriver.support.ui import Select

    d = browser.driver
    d.get(live.host + "/ui/queues")
    wait_until(lambda: "/ui/login" in d.current_url, 10)
    browser.screenshot("login")
    fill(find(browser, "id", "api_key"), "ly_not-a-key")
    find(browser, "css", "form button[type=submit]").click()
    wait_until(lambda: "not valid" in text_of(browser, "css", ".error"), 10)
    assert d.find_elements(*by("css", "header nav")) == []  # a wrong key shows nothing
    log_in(browser, live)
    assert "Entity default" in text_of(browser, "css", "main")

    config = find(browser, "id", "q-config")
    fill(find(browser, "id", "q-name"), "gpu")
    fill(config, "gpus: '{{gpus}}'\nenv: {RUN_TAG: '${run_id}'\n")  # the mapping never closes
    find(browser, "id", "parse-config").click()
    wait_until(lambda: "line 3" in text_of(browser, "css", "#parse-result.error"), 10)

    fill(config, "gpus: '{{gpus}}'\nenv: {RUN_TAG: '${queue_name}-${run_id}'}\n")
    find(browser, "id", "parse-config").click()
    wait_until(lambda: "Variables: gpus" in text_of(browser, "css", "#parse-result.ok"), 10)
    Select(find(browser, "name", "var.gpus.type")).select_by_visible_text("integer")
    fill(find(browser, "name", "var.gpus.default"), "9")
    fill(find(browser, "name", "var.gpus.minimum"), "0")
    fill(find(browser, "name", "var.gpus.maximum"), "4")
    fill(find(browser, "name", "var.gpus.description"), "GPUs per run")
    browser.screenshot("queue-form")
    find(browser, "css", "#queue-form button[type=submit]").click()
    # The API's own refusal, and the form keeps what was typed.
    wait_until(lambda: "default 9 is above the maximum 4" in text_of(browser, "css", ".error"))
    assert find(browser, "name", "var.gpus.maximum").get_attribute("value") == "4"
    browser.screenshot("queue-form-refused")

    fill(find(browser, "name", "var.gpus.default"), "1")
    find(browser, "css", "#queue-form button[type=submit]").click()
    wait_until(lambda: d.current_url.endswith("/ui/e/default/queues/gpu"), 10)
    assert "no agent serves this queue" in text_of(browser, "css", "main")
    queue = live.client().get_queue("default", "gpu")
    assert queue["variables"]["gpus"] == {
        "description": "GPUs per run",
        "schema": {"type": "integer", "default": 1, "minimum": 0, "maximum": 4},
    }
    d.get(live.host + "/ui/queues")
    browser.screenshot("queues")


def test_launch_from_a_job_watch_logs_live_and_cancel(
    live: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    c = live.client()
    c.create_queue(
        "default", {"name": "gpu", "config": "gpus: '{{gpus}}'\n", "variables": QUEUE_VARIABLES}
    )
    live.start_agent("-q", "gpu", "-e", "default", "-j", "2", "--gpus", "0,1,2,3")
    command = [sys.executable, "-c", STEPS, str(write_png(tmp_path / "gradient.png")), "0"]
    first = c.submit(
        "default",
        {"queue": "gpu", "project": "vision", "job_name": "train", "command": command},
    )
    wait_until(lambda: c.get_run(first["id"])["state"] == "finished", 30)

    d = browser.driver
    log_in(browser, live, "/ui/e/default/projects/vision/jobs/train")
    find(browser, "css", "#launch > summary").click()
    gpus = find(browser, "name", "v.gpu.gpus")
    assert [gpus.get_attribute(a) for a in ("type", "min", "max", "step", "value")] == [
        "number",
        "0",
        "4",
        "1",
        "1",  # pre-filled from the last run
    ]
    browser.screenshot("job")
    fill(gpus, "9")
    find(browser, "id", "launch-submit").click()
    assert d.execute_script("return arguments[0].validity.rangeOverflow", gpus)
    assert "/jobs/train" in d.current_url and len(c.list_runs("default")["runs"]) == 1

    fill(gpus, "2")
    cmd = find(browser, "name", "command")
    fill(cmd, cmd.get_attribute("value").removesuffix(" 0") + " 8")  # relaunch with changes
    find(browser, "id", "launch-submit").click()
    wait_until(lambda: "/ui/runs/" in d.current_url, 10)
    run_id = d.current_url.rsplit("/", 1)[-1]
    d.execute_script("window.notReloaded = true")

    def log_text() -> str:
        return str(d.execute_script("return document.getElementById('log').textContent"))

    # Logs arrive while the run is still going: the page follows the tail live.
    wait_until(lambda: "step 1" in log_text(), 20)
    assert "done" not in log_text()
    wait_until(lambda: "running" in text_of(browser, "css", "#run-live .state"), 10)
    browser.screenshot("run-running")
    wait_until(lambda: "done" in log_text(), 20)
    wait_until(lambda: "finished" in text_of(browser, "css", "#run-live .state"), 10)
    wait_until(lambda: "ended" in text_of(browser, "id", "log-status"), 10)
    assert d.execute_script("return window.notReloaded === true")
    assert [f"step {i}" for i in range(8)] == log_text().split("\n")[:8]
    run = c.get_run(run_id)
    assert run["values"] == {"gpus": 2} and run["job"] == "train" and run["gpus"] == 2
    assert [t["state"] for t in run["transitions"]][-1] == "finished"
    assert "claimed by agent" in text_of(browser, "css", ".timeline")
    # The image the run saved is shown inline, loaded through the session cookie.
    image_loaded = (
        "const i = document.querySelector('#run-outputs img'); return !!i && i.naturalWidth"
    )
    wait_until(lambda: d.execute_script(image_loaded) == 96, 10)
    browser.screenshot("run-finished")

    # Relaunch from the run page with a long command, then cancel it while it runs.
    find(browser, "css", "#launch > summary").click()
    cmd = find(browser, "name", "command")
    fill(cmd, cmd.get_attribute("value").removesuffix(" 8") + " 500")
    find(browser, "id", "launch-submit").click()
    wait_until(lambda: "/ui/runs/" in d.current_url and run_id not in d.current_url, 10)
    long_id = d.current_url.rsplit("/", 1)[-1]
    wait_until(lambda: "step 1" in log_text(), 20)
    wait_until(lambda: "running" in text_of(browser, "css", "#run-live .state"), 10)

    d.get(live.host + "/ui/agents")
    assert long_id in text_of(browser, "css", "main")  # holds GPUs 0-1 (or another pair)
    browser.screenshot("agents")
    d.get(live.host + "/ui/e/default/queues/gpu")
    d.execute_script("window.notReloaded = true")
    waiting = c.submit(
        "default", {"queue": "gpu", "project": "vision", "job": "train", "values": {"gpus": 4}}
    )["id"]
    # The new run shows up with why it waits, without a reload.
    wait_until(lambda: waiting in text_of(browser, "id", "queue-live"), 10)
    assert "needs 4 GPUs, 2 free" in text_of(browser, "id", "queue-live")
    assert d.execute_script("return window.notReloaded === true")
    browser.screenshot("queue")
    c.cancel(waiting)
    d.get(live.host + "/ui/projects")
    browser.screenshot("projects")
    d.get(live.host + "/ui/e/default/projects/vision")
    browser.screenshot("jobs")

    d.get(live.host + f"/ui/runs/{long_id}")
    find(browser, "id", "cancel-run").click()
    wait_until(lambda: "cancelled" in text_of(browser, "css", "#run-live .state"), 20)
    assert c.get_run(long_id)["state"] == "cancelled"
    assert d.find_elements(*by("id", "cancel-run")) == []  # nothing left to cancel
    browser.screenshot("run-cancelled")
