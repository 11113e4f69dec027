"""How the tests get a MySQL server: PIKO_TEST_MYSQL_DSN, else a throwaway MariaDB, else none.

`mysql_dsn_for_session(tmp_path_factory)` returns a DSN or None (and `unavailable_reason()`
says why). A sandbox started here (scripts/mariadb-sandbox.sh) lives for the whole pytest
process, is watched by the script's watchdog (it stops when pytest dies), and is stopped by
`stop_session_server()`. Tests call `require_mysql(dsn)`: skip with the reason, or fail under
CI=true, where a missing server must never turn into a silent green run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

SANDBOX = Path(__file__).resolve().parents[1] / "scripts" / "mariadb-sandbox.sh"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

_session: dict[str, Any] = {}  # dsn, reason, dir (when we started the server)


def find_mariadbd() -> str | None:
    for name in ("mariadbd", "mysqld"):
        found = shutil.which(name) or next(
            (str(Path(d) / name) for d in SBIN_DIRS if os.access(Path(d) / name, os.X_OK)), None)
        if found:
            return found
    return None


def mysql_dsn_for_session(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    """The DSN of a server for this pytest process (started once), or None."""
    if "reason" not in _session:
        _session["dsn"], _session["reason"] = _find_or_start(tmp_path_factory)
    return _session["dsn"]  # type: ignore[no-any-return]


def unavailable_reason() -> str:
    return str(_session.get("reason") or "no MySQL server was looked for")


def _find_or_start(tmp_path_factory: pytest.TempPathFactory) -> tuple[str | None, str]:
    try:
        import aiomysql  # noqa: F401
    except ImportError:
        return None, "aiomysql is not installed (pip install 'piko[mysql]')"
    dsn = os.environ.get("PIKO_TEST_MYSQL_DSN")
    if dsn:
        return dsn, "PIKO_TEST_MYSQL_DSN"
    if find_mariadbd() is None:
        return None, "no server: set PIKO_TEST_MYSQL_DSN or install mariadb-server (mariadbd not found)"
    directory = tmp_path_factory.mktemp("mariadb") / "db"
    env = dict(os.environ, MARIADB_SANDBOX_WATCH_PID=str(os.getpid()))
    try:
        done = subprocess.run(["sh", str(SANDBOX), "start", str(directory)], env=env, capture_output=True,
                              text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired:
        return None, "the MariaDB sandbox did not start within 180 s"
    if done.returncode != 0:
        return None, f"the MariaDB sandbox failed to start: {done.stderr.strip()[-500:]}"
    _session["dir"] = directory
    return done.stdout.strip(), f"sandbox in {directory}"


def owns_server() -> bool:
    """True when this process started the server (so a test may stop and restart it)."""
    return "dir" in _session


def sandbox(command: str) -> None:
    """Run `mariadb-sandbox.sh COMMAND DIR` on the session server (start keeps the same port)."""
    subprocess.run(["sh", str(SANDBOX), command, str(_session["dir"])], check=True, capture_output=True,
                   env=dict(os.environ, MARIADB_SANDBOX_WATCH_PID=str(os.getpid())), timeout=180)


def stop_session_server() -> None:
    if "dir" in _session:
        subprocess.run(["sh", str(SANDBOX), "stop", str(_session["dir"])], check=False, timeout=60)


def require_mysql(dsn: str | None) -> str:
    if dsn is None:
        message = f"MySQL tests need a server: {unavailable_reason()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: a missing server fails the run)", pytrace=False)
        pytest.skip(message)
    return dsn


def _admin_connect(dsn: str) -> Any:
    import pymysql  # installed with aiomysql

    parts = urlsplit(dsn)
    return pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                           user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                           autocommit=True, connect_timeout=10)


@contextlib.contextmanager
def fresh_database(dsn: str) -> Iterator[str]:
    """A new empty database `piko_<random>` on the server of `dsn`; dropped afterwards."""
    parts = urlsplit(dsn)
    name = f"{unquote(parts.path.lstrip('/')) or 'piko'}_{secrets.token_hex(6)}"
    conn = _admin_connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        conn = _admin_connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


# -- fixtures (import them into a conftest.py or a test module) -------------------------------
@pytest.fixture(scope="session")
def mysql_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A server DSN for the session, or None when none can be had."""
    yield mysql_dsn_for_session(tmp_path_factory)
    stop_session_server()


@pytest.fixture
def mysql_db_dsn(mysql_dsn: str | None) -> Iterator[str]:
    """A DSN naming a fresh database for this test (skips, or fails under CI=true, without a server)."""
    with fresh_database(require_mysql(mysql_dsn)) as dsn:
        yield dsn
