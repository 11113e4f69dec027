"""MySQL connections for the store: two aiomysql pools and the one way SQL runs on them.

The main pool serves claims, reads and writes; a small control pool serves only the lease
and heartbeats, so a burst of thousands of claims can never delay a renewal past the lease
(which would depose a healthy leader) or a heartbeat past the orphan timeout. Pools run with
autocommit=True; `call(op, is_tx=True)` wraps op in BEGIN ... COMMIT. Deadlocks, lock-wait
timeouts and lost connections are retried with bounded, jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from piko.core.backoff import backoff
from piko.errors import StoreError, StoreUnavailable
from piko.store.mysql import dialect as my

log = logging.getLogger("piko.store.mysql")
T = TypeVar("T")
Op = Callable[[Any], Awaitable[T]]  # receives an aiomysql cursor

# time_zone: CURRENT_TIMESTAMP defaults and any NOW() a user writes are UTC, like the data.
INIT_COMMAND = "SET time_zone = '+00:00', SESSION innodb_lock_wait_timeout = 10"
# The lease and heartbeats give up on a locked row after 1 s: a renew stuck behind someone's
# open transaction must fail (and be retried on the renew interval), not outlast the lease.
CONTROL_INIT_COMMAND = "SET time_zone = '+00:00', SESSION innodb_lock_wait_timeout = 1"
CONTROL_POOL_SIZE = 2
# MariaDB ends a session idle inside a transaction this long (rolled back, locks released): a piko
# process frozen mid-transaction (SIGSTOP, a VM pause) cannot keep other instances off the rows
# it locked. piko's transactions last milliseconds; this only trips on a frozen process.
MARIADB_IDLE_TRANSACTION_S = 20


def _driver() -> Any:
    try:
        import aiomysql
    except ImportError:
        raise StoreUnavailable(
            "the MySQL store needs the aiomysql package: pip install 'piko[mysql]'") from None
    return aiomysql


class MysqlConnections:
    def __init__(self, connect_args: dict[str, Any], description: str, *, pool_size: int, pool_recycle: int,
                 attempts: int) -> None:
        self._connect_args = connect_args
        self.description = description
        self._pool_size = pool_size
        self._pool_recycle = pool_recycle
        self._attempts = max(1, attempts)
        self._pool: Any = None
        self._control: Any = None
        self._aiomysql = _driver()

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def open(self) -> None:
        try:
            extra = await self._server_settings()
            self._pool = await self._create(self._pool_size, INIT_COMMAND + extra)
            self._control = await self._create(CONTROL_POOL_SIZE, CONTROL_INIT_COMMAND + extra)
        except Exception as exc:
            await self.close()
            raise StoreUnavailable(f"cannot connect to {self.description}: {my.reason(exc)}") from exc

    async def _server_settings(self) -> str:
        """Session settings only some servers know (MariaDB's idle-transaction timeout)."""
        conn = await self._aiomysql.connect(**self._connect_args)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT VERSION()")
                (version,) = await cur.fetchone()
        finally:
            conn.close()
        is_mariadb = "mariadb" in str(version).lower()
        return f", SESSION idle_transaction_timeout = {MARIADB_IDLE_TRANSACTION_S}" if is_mariadb else ""

    async def _create(self, size: int, init_command: str) -> Any:
        from pymysql.constants import CLIENT  # installed with aiomysql

        # FOUND_ROWS: rowcount counts matched rows, as in SQLite (a CAS to the same value is a hit).
        return await self._aiomysql.create_pool(
            minsize=1, maxsize=size, pool_recycle=self._pool_recycle, autocommit=True,
            init_command=init_command, client_flag=CLIENT.FOUND_ROWS, cursorclass=_quiet_cursor(self._aiomysql),
            **self._connect_args)

    async def close(self) -> None:
        pools = [p for p in (self._pool, self._control) if p is not None]
        self._pool = self._control = None
        for pool in pools:
            pool.close()
            try:
                await asyncio.wait_for(pool.wait_closed(), 5.0)
            except asyncio.TimeoutError:
                pool.terminate()

    async def call(self, op: Op[T], *, is_tx: bool = False, attempts: int | None = None,
                   is_urgent: bool = False) -> T:
        attempts = attempts or self._attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._once(op, is_tx, self._control if is_urgent else self._pool)
            except Exception as exc:
                code = my.error_code(exc)
                if code is None:
                    raise
                if code not in my.TRANSIENT:
                    raise StoreError(f"{self.description}: {my.reason(exc)}") from exc
                if attempt == attempts:
                    kind = StoreUnavailable if code in my.CONNECTION_LOST else StoreError
                    raise kind(f"{self.description}: {my.reason(exc)} (after {attempts} attempts)") from exc
                log.debug("retrying after transient MySQL error %s (attempt %d)", code, attempt)
            await asyncio.sleep(backoff(attempt, 0.05, 1.0, draw=random.random(), jitter=(0.5, 1.5)))
        raise AssertionError("unreachable")

    async def _once(self, op: Op[T], is_tx: bool, pool: Any) -> T:
        if pool is None:
            raise StoreError(f"{self.description} is not open")
        async with pool.acquire() as conn, conn.cursor() as cur:
            if not is_tx:
                return await op(cur)
            await conn.begin()
            try:
                result = await op(cur)
                await conn.commit()
            except BaseException:
                try:
                    await conn.rollback()
                except Exception:  # the connection is gone; the server rolls back for us
                    conn.close()
                raise
            return result


def _quiet_cursor(aiomysql: Any) -> type:
    """A cursor that skips aiomysql's SHOW WARNINGS round trip after every statement with a note.

    INSERT IGNORE on a taken lock, CREATE TABLE IF NOT EXISTS and VALUES() on MySQL 8 all
    raise notes by design; fetching them costs a round trip and each becomes a Python warning.
    """
    async def no_warnings(self: Any, conn: Any) -> None:
        return None
    return type("QuietCursor", (aiomysql.Cursor,), {"_show_warnings": no_warnings})
