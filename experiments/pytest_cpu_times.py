"""A pytest plugin that reports the CPU seconds of each test (its own process and the
children it waited for), for sizing the suite on a loaded machine where wall times lie.

    python -m pytest -p experiments.pytest_cpu_times tests/test_x.py

prints the slowest ``--cpu-top`` (default 40) tests by CPU seconds (setup + call +
teardown) and the total, and with ``--cpu-json PATH`` writes them all as JSON. Under
pytest-xdist each worker measures its own tests and the controller gathers them.
"""

from __future__ import annotations

import json
import resource
from typing import Any

import pytest

from simulation.atomic import write_text_atomic


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cpu-times")
    group.addoption("--cpu-top", type=int, default=40, help="how many tests to list")
    group.addoption("--cpu-json", default=None, help="write every test's CPU seconds here")


_TIMES: dict[str, float] = {}
_START: dict[str, float] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _START[nodeid] = _cpu_s()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):
    outcome = yield
    report = outcome.get_result()
    if call.when == "teardown" and item.nodeid in _START:  # travels to the xdist controller
        report.user_properties.append(("cpu_s", _cpu_s() - _START.pop(item.nodeid)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        for key, value in report.user_properties:
            if key == "cpu_s":
                _TIMES[report.nodeid] = float(value)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    top = sorted(_TIMES.items(), key=lambda kv: -kv[1])
    tr = terminalreporter
    tr.section(f"CPU seconds per test (top {config.getoption('--cpu-top')})")
    for nodeid, s in top[: config.getoption("--cpu-top")]:
        tr.write_line(f"{s:8.1f}  {nodeid}")
    tr.write_line(f"{sum(_TIMES.values()):8.1f}  total over {len(_TIMES)} tests")
    path = config.getoption("--cpu-json")
    if path:
        write_text_atomic(path, json.dumps(dict(top), indent=1))
