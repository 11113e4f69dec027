"""Literal SQL against an opened store, the way an operator would type it (tests only)."""

from __future__ import annotations

from typing import Any

import pytest


def _sql_only(store: Any) -> None:
    if store.dialect == "memory":
        pytest.skip("plain SQL: for the SQL stores only")


async def raw_execute(store: Any, statement: str) -> None:
    """Run literal SQL the way an operator would (seed rows, test tables)."""
    _sql_only(store)
    if store.dialect == "sqlite":
        await store._worker.call(lambda c: c.execute(statement), is_write=True)
    else:
        await store._execute(statement)


async def raw_fetchall(store: Any, statement: str) -> list[Any]:
    _sql_only(store)
    if store.dialect == "sqlite":
        return list(await store._worker.call(lambda c: c.execute(statement).fetchall(), is_write=False))
    return list(await store._fetchall(statement))
