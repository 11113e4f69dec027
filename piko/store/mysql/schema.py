"""The MySQL schema: migrations under a named lock, then the optional change-log triggers.

Split from store.py (which only runs SQL); imports no asyncio-facing piko code.
"""

from __future__ import annotations

import logging
from typing import Any

from piko.errors import StoreError
from piko.store.mysql import dialect as my
from piko.store.schema import SCHEMA_TABLE, latest_version, migrations, optional_statements, render

log = logging.getLogger("piko.store.mysql")


async def migrate(cur: Any, db_name: str) -> bool:
    """Apply every migration newer than the database's; True if the change log is available."""
    lock_name = f"piko_migrate:{db_name}"[:64]
    await cur.execute(my.MIGRATION_LOCK, (lock_name,))  # one migrator at a time
    try:
        await cur.execute(render(SCHEMA_TABLE, "mysql"))
        await cur.execute(my.SCHEMA_VERSION)
        current = int((await cur.fetchone())[0] or 0)
        for mig in migrations("mysql"):
            if mig.version > current:
                for statement in mig.statements:
                    await _execute_ddl(cur, statement)
                await cur.execute(my.RECORD_MIGRATION, (mig.version, mig.description))
        return await _create_optional(cur)
    finally:
        await cur.execute(my.MIGRATION_UNLOCK, (lock_name,))


async def _execute_ddl(cur: Any, statement: str) -> None:
    try:
        await cur.execute(statement)
    except Exception as exc:
        code = my.error_code(exc)
        if code == my.ER_BINLOG_CREATE_ROUTINE_NEED_SUPER:
            raise StoreError(
                "the schema migration creates triggers, which a server with binary logging (MySQL 8's "
                "default) allows only with SUPER or log_bin_trust_function_creators=1: set that variable, "
                "or run the first start once as an administrator") from exc
        if code not in my.ALREADY_DONE:  # index/trigger exists: an earlier run got that far
            raise


async def _create_optional(cur: Any) -> bool:
    """Create (or confirm) the change-log triggers; False when the server refuses them."""
    for statement in optional_statements("mysql"):
        try:
            await _execute_ddl(cur, statement)
        except Exception as exc:  # 1419 (binlog without SUPER), 1142 (no TRIGGER privilege), ...
            log.warning("change log unavailable, reconcile will read every row each tick: %s", exc)
            return False
    return True


def latest() -> int:
    return latest_version("mysql")
