"""Built-in sinks: JsonlFileSink (one JSON object per line) and SqlSink (upsert by key).

JsonlFileSink appends and fsyncs once per batch; if the file ends in a line cut short by
a crash, the first write starts a new line so every later line stays readable.
SqlSink writes through the app's Store (`upsert_rows`: INSERT ... ON CONFLICT on SQLite,
ON DUPLICATE KEY on MySQL), so replays and retries overwrite instead of duplicating.
Within one batch the last intent for a key wins. Intents it can never write (a delete, a
row_fn error) are rejected one by one, not the batch. When it knows its columns (the default
rows, or `columns=`), it creates its table if missing when the writer starts (`open()`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from piko.errors import ConfigError
from piko.persistence import codec
from piko.persistence.intent import WriteIntent
from piko.persistence.sink_base import RejectedIntents, ResultSink
from piko.protocols import RowSink

Row = Mapping[str, Any]
log = logging.getLogger("piko.persistence")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {  # dialect -> column -> type, for `default_row`
    "sqlite": {"key": "TEXT NOT NULL", "payload": "TEXT NOT NULL", "job_id": "TEXT", "run_id": "TEXT",
               "scheduled_time": "TEXT", "op_type": "TEXT NOT NULL", "idempotency_key": "TEXT"},
    "mysql": {"key": "VARCHAR(255) NOT NULL", "payload": "LONGTEXT NOT NULL", "job_id": "VARCHAR(255)",
              "run_id": "VARCHAR(64)", "scheduled_time": "DATETIME(6)", "op_type": "VARCHAR(16) NOT NULL",
              "idempotency_key": "VARCHAR(255)"},
}


def table_ddl(table: str, columns: Mapping[str, str], key_columns: Sequence[str], dialect: str = "sqlite") -> str:
    """CREATE TABLE IF NOT EXISTS for `columns` (name -> SQL type) keyed on `key_columns`."""
    for name in [table, *columns, *key_columns]:
        if not _IDENT.match(name):
            raise ConfigError(f"{name!r} is not a plain SQL identifier (letters, digits, '_')")
    missing = [k for k in key_columns if k not in columns]
    if missing:
        raise ConfigError(f"table {table}: key column(s) {', '.join(missing)} are not among its columns")
    q = "`" if dialect == "mysql" else '"'
    cols = ", ".join(f"{q}{name}{q} {kind}" for name, kind in columns.items())
    keys = ", ".join(f"{q}{k}{q}" for k in key_columns)
    return f"CREATE TABLE IF NOT EXISTS {q}{table}{q} ({cols}, PRIMARY KEY ({keys}))"


SQLITE_TABLE_DDL = table_ddl("TABLE", DEFAULT_COLUMNS["sqlite"], ("key",)).replace('"TABLE"', "{table}")
"""The default rows' table for SQLite, with a `{table}` placeholder (SqlSink creates it itself)."""


def intent_record(intent: WriteIntent) -> dict[str, Any]:
    """An intent as a JSON-ready dict; the payload uses piko's codec (tagged non-JSON values)."""
    scheduled = intent.scheduled_time
    return {
        "key": intent.key, "payload": codec.encode(intent.payload), "job_id": intent.job_id,
        "run_id": intent.run_id, "scheduled_time": scheduled.isoformat() if scheduled else None,
        "op_type": intent.op_type, "idempotency_key": intent.idempotency_key,
    }


class JsonlFileSink(ResultSink):
    """Appends one JSON object per intent to `path` (created 0600), fsynced per batch."""

    def __init__(self, name: str, path: str | os.PathLike[str]) -> None:
        super().__init__(name)
        self.path = Path(path)
        self._fd: int | None = None

    async def write_batch(self, batch: list[WriteIntent]) -> None:
        lines = [json.dumps(intent_record(i), separators=(",", ":"), ensure_ascii=False) for i in batch]
        await asyncio.to_thread(self._append, ("\n".join(lines) + "\n").encode("utf-8"))

    async def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await asyncio.to_thread(os.close, fd)

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # isolate a line a crash cut short
            self._fd = fd
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    @staticmethod
    def read(path: str | os.PathLike[str], types: Mapping[str, type] | None = None) -> list[dict[str, Any]]:
        """The records of a JSONL file, payloads decoded; lines cut short by a crash are skipped."""
        records = []
        with open(path, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                record["payload"] = codec.decode(record.get("payload"), types)
                records.append(record)
        return records


def default_row(intent: WriteIntent) -> dict[str, Any]:
    """SqlSink's row: key, payload as JSON text, and the intent's identity columns."""
    return {
        "key": str(intent.key), "payload": codec.dumps(intent.payload).decode("utf-8"),
        "job_id": intent.job_id, "run_id": None if intent.run_id is None else str(intent.run_id),
        "scheduled_time": intent.scheduled_time, "op_type": intent.op_type,
        "idempotency_key": intent.idempotency_key,
    }


class SqlSink(ResultSink):
    """Upserts one row per intent into `table` through the app's store.

    `create_table`: None (default) creates the table at open() when the columns are known (the
    default rows, or `columns={name: SQL type}` given with a `row_fn`); True insists (an error
    if it cannot); False never does.
    """

    def __init__(self, name: str, table: str, *, store: RowSink, key_columns: Sequence[str] = ("key",),
                 row_fn: Callable[[WriteIntent], Row] | None = None, columns: Mapping[str, str] | None = None,
                 create_table: bool | None = None) -> None:
        super().__init__(name)
        if not key_columns:
            raise ConfigError(f"SqlSink {name!r} needs at least one key column")
        if create_table and row_fn is not None and columns is None:
            raise ConfigError(f"SqlSink {name!r}: create_table=True with a row_fn needs columns="
                              "{name: SQL type} for the table it creates")
        self.table, self.key_columns = table, tuple(key_columns)
        self._store = store
        self._row_fn = row_fn or default_row
        self._columns = dict(columns) if columns is not None else None
        self.should_create_table = create_table is not False and (columns is not None or row_fn is None)
        self._is_create_required = create_table is True
        if self.should_create_table:
            self.create_table_ddl()  # identifiers are checked now, not at start-up

    def create_table_ddl(self, dialect: str | None = None) -> str:
        """The CREATE TABLE IF NOT EXISTS this sink runs at open() (default: the store's dialect)."""
        chosen = dialect or str(getattr(self._store, "dialect", "sqlite"))
        columns = self._columns or DEFAULT_COLUMNS.get(chosen, DEFAULT_COLUMNS["sqlite"])
        return table_ddl(self.table, columns, self.key_columns, chosen)

    async def open(self) -> None:
        if self.should_create_table:
            await self._create_table(self.create_table_ddl())

    async def _create_table(self, ddl: str) -> None:
        execute_ddl = getattr(self._store, "execute_ddl", None)
        path = getattr(self._store, "path", None)
        if callable(execute_ddl):
            await execute_ddl(ddl)
        elif getattr(self._store, "dialect", None) == "sqlite" and isinstance(path, str) and path != ":memory:":
            await asyncio.to_thread(_sqlite_ddl, path, ddl)  # its own short connection: SQLite allows it
        elif self._is_create_required:
            raise ConfigError(f"SqlSink {self.name!r} cannot create table {self.table} through this store; "
                              f"create it yourself ({ddl}) and pass create_table=False")
        else:
            log.warning("persistence: SqlSink %r cannot create table %s through this store; make sure it "
                        "exists: %s", self.name, self.table, ddl)

    async def write_batch(self, batch: list[WriteIntent]) -> None:
        rows: dict[tuple[Any, ...], Row] = {}
        rejected: list[tuple[WriteIntent, BaseException]] = []
        for intent in batch:
            try:
                row = self._row(intent)
            except Exception as exc:
                rejected.append((intent, exc))
                continue
            rows[tuple(row[c] for c in self.key_columns)] = row
        if rows:
            await self._store.upsert_rows(self.table, self.key_columns, list(rows.values()))
        if rejected:
            raise RejectedIntents(rejected)

    def _row(self, intent: WriteIntent) -> Row:
        if intent.op_type == "delete":
            raise ConfigError(f"SqlSink {self.name!r} upserts rows; it cannot apply op_type 'delete'")
        row = self._row_fn(intent)
        missing = [c for c in self.key_columns if c not in row]
        if missing:
            raise ConfigError(f"SqlSink {self.name!r}: row for key {intent.key!r} lacks key column(s) "
                              f"{', '.join(missing)}")
        return row


def _sqlite_ddl(path: str, ddl: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path, timeout=10.0)
    try:
        with conn:
            conn.execute(ddl)
    finally:
        conn.close()
