"""The reliability report: what was injected and what was seen, printed after the tests."""

from __future__ import annotations

from collections import Counter

import pytest

REPORT: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    terminalreporter.section("launchyard reliability report")
    for key in sorted(REPORT):
        terminalreporter.write_line(f"{key:<45}{REPORT[key]:>10}")


from tests.e2e.conftest import live_server  # noqa: E402,F401  (a real server per test)
