"""What only the MySQL store has: DSN forms, connection failures, retries, restarts, migrations."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import pytest

from piko.errors import ConfigError, StoreError, StoreUnavailable
from piko.store import make_store
from piko.store.mysql import MysqlStore
from piko.store.mysql.dialect import parse_dsn
from piko.store.schema import latest_version
from tests import mysql_server

UTC = timezone.utc
needs_driver = pytest.mark.skipif(importlib.util.find_spec("aiomysql") is None,
                                  reason="aiomysql is not installed (pip install 'piko[mysql]')")


def with_netloc(dsn: str, *, password: str | None = None, port: int | None = None, db: str | None = None) -> str:
    parts = urlsplit(dsn)
    user = parts.username or ""
    netloc = f"{user}:{password if password is not None else parts.password}@{parts.hostname}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{db}" if db else parts.path))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- DSN handling (no server needed) ------------------------------------------------------------
@needs_driver
@pytest.mark.parametrize("scheme", ["mysql", "mysql+aiomysql", "mysql+asyncmy"])
def test_every_mysql_scheme_makes_a_mysql_store_with_a_masked_description(scheme: str) -> None:
    store = make_store(f"{scheme}://app:s%40cret@db.example:3307/piko?charset=utf8mb4", pool_size=3,
                       pool_recycle=600)
    assert isinstance(store, MysqlStore)
    assert "s%40cret" not in store.description and "***" in store.description


def test_parse_dsn_decodes_credentials_and_reads_query_parameters() -> None:
    args = parse_dsn("mysql+asyncmy://app:p%40ss@10.0.0.5:3307/pikodb?charset=latin1&connect_timeout=2")
    assert args == {"host": "10.0.0.5", "port": 3307, "user": "app", "password": "p@ss", "db": "pikodb",
                    "charset": "latin1", "unix_socket": None, "connect_timeout": 2.0, "mode": "rw"}
    assert parse_dsn("mysql://u@localhost/x")["port"] == 3306
    assert parse_dsn("mysql://u@localhost/x?mode=ro")["mode"] == "ro"
    assert parse_dsn("mysql://u@/x?unix_socket=/run/my.sock")["unix_socket"] == "/run/my.sock"


@pytest.mark.parametrize("dsn, fragment", [
    ("mysql://u:p@h:3306", "names no database"),
    ("mysql://u:p@h/db?pool=3", "not supported"),
    ("mysql://u:p@h/db?mode=rwc", "mode 'rwc' is not one of rw, ro"),
    ("postgres://u:p@h/db", "is not one of"),
])
def test_bad_dsns_are_config_errors_without_the_password(dsn: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_dsn(dsn)
    assert ":p@" not in str(info.value)


@needs_driver
def test_pool_options_in_the_dsn_are_used_and_a_bad_charset_is_a_config_error() -> None:
    args = parse_dsn("mysql://u:p@h/db?pool_size=3&pool_recycle=120")
    assert (args["pool_size"], args["pool_recycle"]) == (3, 120)
    store = MysqlStore("mysql://u:p@h/db?pool_size=3&pool_recycle=120")
    assert "pool_size" not in store._connect_args
    with pytest.raises(ConfigError, match="charset 'bogus'"):
        MysqlStore("mysql://u:p@h/db?charset=bogus")


def test_missing_aiomysql_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiomysql", None)
    with pytest.raises(StoreUnavailable, match=r"pip install 'piko\[mysql\]'"):
        MysqlStore("mysql://u:p@127.0.0.1/db")


@needs_driver
async def test_closed_port_is_store_unavailable_at_open_quickly() -> None:
    store = MysqlStore(f"mysql://u:secret@127.0.0.1:{closed_port()}/piko")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot connect") as info:
        await store.open()
    assert time.monotonic() - started < 5
    assert "secret" not in str(info.value) and "***" in str(info.value)


# -- against a server ------------------------------------------------------------------------------
@pytest.mark.mysql
async def test_wrong_password_is_store_unavailable_with_a_masked_dsn(mysql_db_dsn: str) -> None:
    store = MysqlStore(with_netloc(mysql_db_dsn, password="not-the-password"))
    with pytest.raises(StoreUnavailable, match="1045") as info:
        await store.open()
    assert "not-the-password" not in str(info.value)


@pytest.mark.mysql
async def test_missing_database_is_store_unavailable(mysql_db_dsn: str) -> None:
    store = MysqlStore(with_netloc(mysql_db_dsn, db="piko_does_not_exist"))
    with pytest.raises(StoreUnavailable, match="1049"):
        await store.open()


@pytest.mark.mysql
async def test_concurrent_opens_of_a_fresh_database_migrate_once(mysql_db_dsn: str) -> None:
    stores = [MysqlStore(mysql_db_dsn) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        newest = latest_version("mysql")
        assert [await s.schema_version() for s in stores] == [newest] * 3
        rows = await stores[0]._fetchall("SELECT version FROM piko_schema ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, newest + 1))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


@pytest.mark.mysql
async def test_rerun_migration_tolerates_existing_indexes_and_triggers(mysql_db_dsn: str) -> None:
    async with MysqlStore(mysql_db_dsn) as store:
        await store._execute("DELETE FROM piko_schema")
    async with MysqlStore(mysql_db_dsn) as store:  # CREATE INDEX / TRIGGER again: 1061 / 1359, ignored
        assert await store.schema_version() == latest_version("mysql")


@pytest.mark.mysql
async def test_sessions_are_utc_so_database_defaults_are_utc(mysql_db_dsn: str) -> None:
    async with MysqlStore(mysql_db_dsn) as store:
        (row,) = await store._fetchall("SELECT @@session.time_zone, UTC_TIMESTAMP(6) - NOW(6)")
        assert row[0] == "+00:00" and row[1] == 0
        (stamp,) = await store._fetchall("SELECT UTC_TIMESTAMP(6)")
        assert abs(stamp[0].replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.mysql
async def test_an_interval_row_inserted_from_a_session_ahead_of_utc_fires_at_once(mysql_db_dsn: str) -> None:
    from piko.core.reconcile import build_trigger

    async with MysqlStore(mysql_db_dsn) as store:
        async def insert_from_shanghai(cur: object) -> None:  # an operator's client on a +08:00 server
            await cur.execute("SET time_zone = '+08:00'")  # type: ignore[attr-defined]
            await cur.execute("INSERT INTO scheduled_job (job_id, schedule_type, schedule_expr) "  # type: ignore[attr-defined]
                              "VALUES ('tz8', 'interval', '{\"seconds\": 10}')")
            await cur.execute("SET time_zone = '+00:00'")  # type: ignore[attr-defined]
        await store._call(insert_from_shanghai)
        (row,) = await store.load_schedules(["tz8"])
        now = datetime.now(UTC)
        assert row.created_at is not None and row.created_at - now > timedelta(hours=7)  # read as UTC
        first = build_trigger(row, "UTC").next_fire_time(now)
        assert first is not None and first - now <= timedelta(seconds=10)  # not 8 hours from now


@pytest.mark.mysql
async def test_refused_writes_fail_the_ping_until_a_write_succeeds_again(mysql_db_dsn: str) -> None:
    """SELECT 1 answers while every write is refused (a read-only server, a full disk): /readyz
    must say so. A read-only session on the one pooled connection refuses writes for real (1792)."""
    from piko.core.types import ScheduleRow

    async def session(mode: str) -> None:
        async def run(cur: object) -> None:
            await cur.execute(f"SET SESSION TRANSACTION {mode}")  # type: ignore[attr-defined]
        await store._call(run, is_read=True)

    async with MysqlStore(mysql_db_dsn + "?pool_size=1") as store:
        await store.ping()
        await session("READ ONLY")
        with pytest.raises(StoreError, match="1792"):
            await store.upsert_schedule(ScheduleRow("j", "cron", "* * * * *"))
        with pytest.raises(StoreUnavailable, match="writes fail: MySQL error 1792"):
            await store.ping()
        await session("READ WRITE")
        with pytest.raises(StoreUnavailable):  # still: nothing was written since
            await store.ping()
        await store.upsert_schedule(ScheduleRow("j", "cron", "* * * * *"))
        await store.ping()


@pytest.mark.mysql
async def test_deadlocks_are_retried_and_other_errors_are_store_errors(mysql_db_dsn: str) -> None:
    import pymysql

    calls: list[int] = []

    async def deadlock_once(cur: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
        return "ok"

    async with MysqlStore(mysql_db_dsn) as store:
        assert await store._call(deadlock_once, is_tx=True) == "ok"
        assert len(calls) == 2
        with pytest.raises(StoreError, match="1064"):
            await store._execute("SELEC 1")


@pytest.mark.mysql
async def test_store_survives_a_server_restart(mysql_dsn: str | None, mysql_db_dsn: str) -> None:
    if not mysql_server.owns_server():
        pytest.skip("needs the test-started sandbox (PIKO_TEST_MYSQL_DSN servers are not restarted)")
    async with MysqlStore(mysql_db_dsn) as store:
        await store.ping()
        mysql_server.sandbox("stop")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.ping()
            with pytest.raises(StoreUnavailable):
                await store.load_schedules()
            assert time.monotonic() - started < 10
        finally:
            mysql_server.sandbox("start")
        await store.ping()
        assert await store.lease_acquire("main", "a", timedelta(seconds=5)) is not None


def test_a_missing_server_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="MySQL tests need a server"):
        mysql_server.require_mysql(None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        mysql_server.require_mysql(None)
    assert mysql_server.require_mysql("mysql://u@h/db") == "mysql://u@h/db"


@pytest.mark.mysql
async def test_a_piko_session_on_mariadb_cannot_hold_locks_while_its_process_is_frozen(mysql_db_dsn: str) -> None:
    """A process frozen inside a transaction (SIGSTOP) would keep its row locks until it woke: the
    server ends such a session after idle_transaction_timeout, so the rows free themselves."""
    store = MysqlStore(mysql_db_dsn)
    await store.open()
    try:
        async def read(cur):
            await cur.execute("SELECT @@version, @@idle_transaction_timeout")
            return await cur.fetchone()
        for is_urgent in (False, True):
            version, timeout = await store._db.call(read, is_urgent=is_urgent)
            if "mariadb" in str(version).lower():
                assert int(timeout) == 20
    finally:
        await store.close()
