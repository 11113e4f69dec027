"""Built-in sinks: JSON-lines file and SQL upsert through the app's store."""

from __future__ import annotations

import os
import sqlite3
import stat
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from piko.errors import ConfigError
from piko.persistence.intent import WriteIntent
from piko.persistence.sink_base import RejectedIntents
from piko.persistence.sinks import SQLITE_TABLE_DDL, JsonlFileSink, SqlSink, default_row
from piko.store.memory import MemoryStore
from piko.store.sqlite import SqliteStore
from tests.faults import FaultyStore
from tests.persistence.conftest import SCHEDULED_AT, intent


async def test_jsonl_sink_appends_one_object_per_intent_in_a_0600_file(tmp_path: Path) -> None:
    sink = JsonlFileSink("out", tmp_path / "out.jsonl")
    await sink.write_batch([intent(1, payload={"amount": Decimal("9.90")}), intent(2)])
    await sink.write_batch([intent(3)])
    await sink.close()
    records = JsonlFileSink.read(tmp_path / "out.jsonl")
    assert [r["key"] for r in records] == ["1", "2", "3"]
    assert records[0]["payload"] == {"amount": Decimal("9.90")}
    assert records[0]["scheduled_time"] == SCHEDULED_AT.isoformat()
    assert stat.S_IMODE(os.stat(tmp_path / "out.jsonl").st_mode) == 0o600


async def test_jsonl_sink_starts_a_new_line_after_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"key":"1","payload":1}\n{"key":"2","pay')
    sink = JsonlFileSink("out", path)
    await sink.write_batch([intent(3)])
    await sink.close()
    assert [r["key"] for r in JsonlFileSink.read(path)] == ["1", "3"]


def recording_store() -> FaultyStore:
    """The memory store, remembering each upsert_rows call it answered (table, key columns, rows)."""
    return FaultyStore(MemoryStore())


async def test_sql_sink_upserts_default_rows_last_intent_per_key_wins() -> None:
    store = recording_store()
    sink = SqlSink("sql", "results", store=store)  # type: ignore[arg-type]
    await sink.write_batch([intent(1, payload={"v": 1}), intent(2), intent(1, payload={"v": 2})])
    [(table, keys, rows)] = store.answered["upsert_rows"]
    assert (table, tuple(keys)) == ("results", ("key",))
    assert [(r["key"], r["payload"]) for r in rows] == [("1", '{"v":2}'), ("2", '{"n":2}')]
    assert rows[0]["run_id"] == "1" and rows[0]["scheduled_time"] == SCHEDULED_AT


async def test_sql_sink_rejects_deletes_and_bad_rows_one_by_one() -> None:
    store = MemoryStore()
    sink = SqlSink("sql", "results", store=store, key_columns=("id",),
                   row_fn=lambda i: {"id": i.key} if i.key != "bad" else {"other": 1})
    delete = WriteIntent("sql", "d", None, "j", 1, None, op_type="delete")
    with pytest.raises(RejectedIntents) as caught:
        await sink.write_batch([intent("ok"), delete, intent("bad")])
    assert [r["id"] for r in store.t.sink_rows["results"].values()] == ["ok"]
    assert [str(e) for _, e in caught.value.rejected] == [
        "SqlSink 'sql' upserts rows; it cannot apply op_type 'delete'",
        "SqlSink 'sql': row for key 'bad' lacks key column(s) id",
    ]


async def test_sql_sink_creates_its_table_and_writes_through_the_real_sqlite_store_idempotently(
        tmp_path: Path) -> None:
    db = tmp_path / "piko.db"
    store = SqliteStore(str(db))
    await store.open()
    try:
        sink = SqlSink("sql", "results", store=store)
        await sink.open()  # the writer calls it at start: the table did not exist
        await sink.write_batch([intent(i) for i in range(3)])
        await sink.write_batch([intent(1, payload={"again": True})])  # a replay overwrites
        await sink.open()  # a second start leaves the table alone
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, payload, run_id, op_type FROM results ORDER BY key").fetchall()
    assert rows == [("0", '{"n":0}', "1", "upsert"), ("1", '{"again":true}', "1", "upsert"),
                    ("2", '{"n":2}', "1", "upsert")]


async def test_sql_sink_with_a_row_fn_creates_the_declared_columns(tmp_path: Path) -> None:
    db = tmp_path / "piko.db"
    store = SqliteStore(str(db))
    await store.open()
    try:
        sink = SqlSink("sql", "totals", store=store, key_columns=("day",), columns={"day": "TEXT", "total": "REAL"},
                       row_fn=lambda i: {"day": i.key, "total": i.payload["total"]})
        await sink.open()
        await sink.write_batch([intent("2026-03-01", payload={"total": 9.5})])
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT day, total FROM totals").fetchall() == [("2026-03-01", 9.5)]


def test_sql_sink_refuses_to_create_a_table_whose_columns_it_cannot_know() -> None:
    with pytest.raises(ConfigError, match="needs columns="):
        SqlSink("sql", "t", store=MemoryStore(), row_fn=lambda i: {"key": i.key}, create_table=True)
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        SqlSink("sql", "bad name", store=MemoryStore())
    assert not SqlSink("sql", "t", store=MemoryStore(), row_fn=lambda i: {"key": i.key}).should_create_table


async def test_sql_sink_on_a_store_that_cannot_run_ddl_says_what_to_create() -> None:
    upsert_only = SimpleNamespace(upsert_rows=MemoryStore().upsert_rows)  # a row sink without execute_ddl
    sink = SqlSink("sql", "results", store=upsert_only, create_table=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CREATE TABLE IF NOT EXISTS"):
        await sink.open()
    assert "`key` VARCHAR(255) NOT NULL" in sink.create_table_ddl("mysql")


def test_the_exported_sqlite_ddl_matches_the_default_rows(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute(SQLITE_TABLE_DDL.format(table="results"))
        columns = [row[1] for row in conn.execute("PRAGMA table_info(results)")]
    assert columns == list(default_row(intent(1)))
