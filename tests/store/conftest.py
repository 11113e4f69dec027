"""Fixtures of the store tests: one `store` fixture over every implementation.

`store` yields an opened SqliteStore (a temp file) and an opened MysqlStore (a fresh
database per test, dropped afterwards). `async def` tests run on the same per-test event
loop as the fixtures (pytest_pyfunc_call below), so no asyncio plugin is needed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from piko.protocols import Store
from piko.store import make_store


@pytest.fixture
def store_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    loop = pyfuncitem.funcargs.get("store_loop")
    if not isinstance(loop, asyncio.AbstractEventLoop):
        loop = asyncio.new_event_loop()
        pyfuncitem.addfinalizer(loop.close)  # type: ignore[attr-defined]
    names = pyfuncitem._fixtureinfo.argnames  # the test's own arguments
    loop.run_until_complete(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True


def store_dsn(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DSN for a fresh, empty store of `kind` ('memory', 'sqlite' or 'mysql')."""
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'piko.db'}"
    return str(request.getfixturevalue("mysql_db_dsn"))  # skips (or fails under CI) without a server


STORE_KINDS = ["memory", "sqlite", pytest.param("mysql", marks=pytest.mark.mysql)]


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The DSN of a fresh store, once per implementation."""
    return store_dsn(request.param, request, tmp_path)


@pytest.fixture
def store(store_url: str, store_loop: asyncio.AbstractEventLoop) -> Iterator[Store]:
    opened = make_store(store_url)
    store_loop.run_until_complete(opened.open())
    yield opened
    store_loop.run_until_complete(opened.close())

