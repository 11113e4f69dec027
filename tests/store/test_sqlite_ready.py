"""The SQLite store's ping (what /readyz asks) fails when writes cannot succeed, not only
when the file does not answer: a full disk and a deleted or replaced file both leave
SELECT 1 working while every run goes unrecorded."""

from __future__ import annotations

import os

import pytest

from piko.core.types import ScheduleRow
from piko.errors import StoreError, StoreUnavailable
from piko.store.sqlite import SqliteStore


def row(i: int) -> ScheduleRow:
    return ScheduleRow(f"job{i}", "cron", "x" * 2000)


async def test_a_full_database_fails_the_ping_until_a_write_succeeds_again(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "full.db"))
    await store.open()
    try:
        pages = await store._worker.call(lambda c: c.execute("PRAGMA page_count").fetchone()[0], is_write=False)
        # SQLITE_FULL for real, from SQLite's own page limit (a tmpfs would need root)
        await store._worker.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"), is_write=False)
        with pytest.raises(StoreError, match="full"):
            for i in range(50):
                await store.upsert_schedule(row(i))
        with pytest.raises(StoreUnavailable, match="writes fail: database or disk is full"):
            await store.ping()
        await store._worker.call(lambda c: c.execute("PRAGMA max_page_count = 1000000"), is_write=False)
        with pytest.raises(StoreUnavailable):  # nothing has been written since: still not ready
            await store.ping()
        await store.upsert_schedule(row(99))
        await store.ping()
    finally:
        await store.close()


async def test_a_deleted_or_replaced_file_fails_the_ping(tmp_path) -> None:
    path = tmp_path / "gone.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.ping()
        moved = tmp_path / "moved.db"
        os.rename(path, moved)
        with pytest.raises(StoreUnavailable, match="was deleted while open"):
            await store.ping()
        path.write_bytes(b"")  # another file now has the name
        with pytest.raises(StoreUnavailable, match="was replaced while open"):
            await store.ping()
        path.unlink()
        os.rename(moved, path)  # the same file is back
        await store.ping()
    finally:
        await store.close()


def _open_and_close(path: str, barrier) -> None:  # a child process: exit code 0 when it opened the file
    import asyncio

    async def go() -> None:
        store = SqliteStore(path)
        barrier.wait()
        await store.open()
        await store.close()

    asyncio.run(go())


def test_processes_started_together_on_a_new_file_all_open_it(tmp_path) -> None:
    """A scheduler and a worker started together on one new file: SQLite refuses the second
    switch to WAL at once ('database is locked', no busy wait); before the fix about 1 in 10
    of these starts failed. 3 processes x 20 new files, every one must open and migrate."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for n in range(20):
        path = str(tmp_path / f"new{n}.db")
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=_open_and_close, args=(path, barrier)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        assert [proc.exitcode for proc in procs] == [0, 0, 0], f"file {n}"
