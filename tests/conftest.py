"""Shared fixtures: fake clock, temporary SQLite files, a bounded wait helper."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from piko.clock import FakeClock
from tests.mysql_server import mysql_db_dsn, mysql_dsn  # noqa: F401  (fixtures, shared by every test dir)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

UTC = timezone.utc


@pytest.fixture(autouse=True)
def _isolated_default_registry():
    """Jobs a test registers with the module-level `@job` (the older API) leave with it: every
    app adopts that registry's jobs, so a leftover would run in later tests' apps."""
    from piko.core.registry import default_registry

    saved = dict(default_registry._jobs)
    yield
    default_registry._jobs.clear()
    default_registry._jobs.update(saved)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "piko.db")


async def wait_until(predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.005) -> None:
    """Poll `predicate` (sync or async) until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


async def run_until_quiet(max_rounds: int = 10_000) -> None:
    """Let the event loop run until no callback is ready: every task waits on something only time
    or a test brings (a fake clock's sleeper, a held store call, an event).

    For apps on a FakeClock and a MemoryStore, where no thread or socket answers later: what is
    not ready now will not become ready by itself. Timers on the loop's own clock (an
    asyncio.wait timeout) are not waited for. Reads the loop's ready queue (a CPython detail,
    acceptable in a test helper); fails if the loop is still busy after `max_rounds` yields.
    """
    loop = asyncio.get_running_loop()
    for _ in range(max_rounds):
        await asyncio.sleep(0)
        if not loop._ready:  # type: ignore[attr-defined]
            return
    raise AssertionError(f"the event loop was still busy after {max_rounds} rounds")


async def advance(clock: FakeClock, seconds: float) -> None:
    """Let everything that can run now run, move the fake clock, and let what it woke run."""
    await run_until_quiet()
    clock.advance(seconds)
    await run_until_quiet()


class Every:
    """A minimal pure trigger for kernel tests: start + k * period."""

    def __init__(self, seconds: float, start: datetime) -> None:
        self.period = timedelta(seconds=seconds)
        self.start = start

    def next_fire_time(self, after: datetime) -> datetime | None:
        if after < self.start:
            return self.start
        k = int((after - self.start) / self.period) + 1
        return self.start + k * self.period


@pytest.fixture(autouse=True)
def _no_piko_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's PIKO_* settings or settings files by accident."""
    for name in list(os.environ):
        if name.startswith("PIKO_") and not name.startswith("PIKO_TEST_"):
            monkeypatch.delenv(name, raising=False)


_PEERS = ("apscheduler", "croniter", "cronsim", "aiomysql", "prometheus_client", "uvicorn", "pydantic", "hypothesis")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Print which peer versions the differential and compatibility tests run against (CI's log
    shows it even under -q, where pytest hides its report header)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("peers: " + ", ".join(f"{name} {version(name)}" for name in _PEERS))
