"""Fixtures for the web UI: a logged-in HTTP client, and a real headless Chromium.

The browser is Debian's ``chromium`` driven by Selenium through Debian's
``chromedriver`` (never a tool's own browser download: there is no network).
Without them the browser tests skip locally and fail in CI (``require``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerHarness, require
from tests.e2e.conftest import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def login(harness: ServerHarness, key: str | None = None) -> Any:
    """Log the harness's TestClient in through the form; returns the client."""
    response = harness.http.post(
        "/ui/login",
        data={"api_key": key or harness.admin_key, "next": "/ui/queues"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return harness.http


@pytest.fixture
def ui(sqlite_server: ServerHarness) -> ServerHarness:
    login(sqlite_server)
    return sqlite_server


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Browser:
    """A Selenium driver plus the test's screenshot folder."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        # A full-page shot: grow the window to the document's height first.
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, min(max(int(height), 800), 4000))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 900)
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    have = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
    require(
        "Chromium and chromedriver",
        have and _selenium_installed(),
        "apt-get install -y chromium chromium-driver; pip install selenium",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(0)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Browser(driver, shots)
    finally:
        driver.quit()
        artifacts = os.environ.get("LAUNCHYARD_TEST_ARTIFACTS")
        if artifacts:  # CI keeps the screenshots
            shutil.copytree(shots, Path(artifacts) / tmp_path.name, dirs_exist_ok=True)


def _selenium_installed() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return True
