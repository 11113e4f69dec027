"""Stores: where schedules, configs, run records, locks, watermarks and leases live.

`make_store(dsn)` picks the implementation from the DSN: `sqlite:///path` (or a bare path)
-> SQLite (`?mode=ro` only reads, `?mode=rw` never creates the file); `mysql://`,
`mysql+aiomysql://`, `mysql+asyncmy://` -> MySQL (needs aiomysql; `?mode=ro` only reads);
`memory://` -> in this process only (tests, trying piko out). Each implements every role of
piko.protocols.Store; SQL shared by the SQL stores is in sql.py, the schema in schema.py.
"""

from __future__ import annotations

from typing import Any

from piko.errors import ConfigError
from piko.protocols import Store


def make_store(dsn: str, **options: Any) -> Store:
    """Build (not open) the store a DSN names."""
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme in ("", "sqlite", "file"):
        from piko.store.sqlite import SqliteStore

        path = dsn.split("://", 1)[1] if scheme else dsn
        if scheme and path.startswith("/"):
            path = path[1:]  # sqlite:///relative.db -> relative.db ; sqlite:////abs.db -> /abs.db
        if scheme:
            path, _, query = path.partition("?")
            options = {**options, **_sqlite_query(dsn, query)}
        if not path:
            raise ConfigError(f"SQLite DSN {dsn!r} names no file (use sqlite:///piko.db)")
        return SqliteStore(path, **{k: v for k, v in options.items() if k in {"busy_timeout_s", "mode"}})
    if scheme == "memory":
        from piko.store.memory import MemoryStore

        return MemoryStore(options.get("clock"))
    if scheme.startswith("mysql"):
        from piko.store.mysql import MysqlStore  # type: ignore[import-not-found]

        return MysqlStore(dsn, **options)  # type: ignore[no-any-return]
    raise ConfigError(f"unsupported store DSN scheme {scheme!r}: use sqlite:///FILE, mysql://USER:PASS@HOST/DB "
                      f"or memory://")


def _sqlite_query(dsn: str, query: str) -> dict[str, Any]:
    """sqlite:///piko.db?mode=ro: SQLite's own open modes (ro, rw, rwc)."""
    from urllib.parse import parse_qsl

    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - {"mode"})
    if unknown:
        raise ConfigError(f"SQLite DSN {dsn!r}: parameter(s) {', '.join(unknown)} not supported (allowed: mode)")
    return params
