"""Stores: where schedules, configs, run records, locks, watermarks and leases live.

`open_store(dsn)` picks the implementation from the DSN: `sqlite:///path` (or a bare path)
-> SQLite; `mysql://`, `mysql+aiomysql://`, `mysql+asyncmy://` -> MySQL (needs aiomysql).
"""

from __future__ import annotations

from typing import Any

from piko.errors import ConfigError
from piko.ports import Store


def make_store(dsn: str, **options: Any) -> Store:
    """Build (not open) the store a DSN names."""
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme in ("", "sqlite", "file"):
        from piko.store.sqlite import SqliteStore

        path = dsn.split("://", 1)[1] if scheme else dsn
        if scheme and path.startswith("/"):
            path = path[1:]  # sqlite:///relative.db -> relative.db ; sqlite:////abs.db -> /abs.db
        if not path:
            raise ConfigError(f"SQLite DSN {dsn!r} names no file (use sqlite:///piko.db)")
        return SqliteStore(path, **{k: v for k, v in options.items() if k in {"busy_timeout_s"}})
    if scheme.startswith("mysql"):
        from piko.store.mysql import MysqlStore  # type: ignore[import-not-found]

        return MysqlStore(dsn, **options)  # type: ignore[no-any-return]
    raise ConfigError(f"unsupported store DSN scheme {scheme!r}: use sqlite:///FILE or mysql://USER:PASS@HOST/DB")
