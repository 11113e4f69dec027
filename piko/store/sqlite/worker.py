"""One thread that owns the SQLite connection, so the event loop never blocks on the file.

Callers submit small functions; the thread drains what is queued and runs it as one
batch: reads alone, or writes in one BEGIN IMMEDIATE transaction (each op in its own
SAVEPOINT, so one failing op rolls back only itself) and one COMMIT. Futures resolve only
after the commit, so an awaited write is durable. Must not import asyncio-facing piko code.
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from piko.errors import StoreError, StoreUnavailable
from piko.store.sqlite import access as sqlite_access

Op = Callable[[sqlite3.Connection], Any]
_STOP = object()
# Errors that mean writes cannot succeed until someone acts (a full disk, a read-only or
# broken file), unlike SQLITE_BUSY/LOCKED: SQLITE_READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
_STUCK_CODES = frozenset({8, 10, 11, 13, 14, 26})
_STUCK_WORDS = ("disk is full", "readonly", "disk i/o error", "malformed", "not a database", "unable to open")
_WAKE = object()  # an urgent call is waiting


@dataclass
class _Call:
    fn: Op
    is_write: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class SqliteWorker:
    def __init__(self, path: str, *, busy_timeout_s: float = 10.0, batch_max: int = 512, mode: str = "rwc") -> None:
        self.path = path
        self.mode = mode  # sqlite_access.MODES
        self._busy_timeout_s = busy_timeout_s
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._urgent: collections.deque[_Call] = collections.deque()  # lease and heartbeat: never behind a burst
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        # Why the last write failed, while no write has succeeded since: /readyz reports it
        # (a SELECT 1 answers even when the disk is full and every write fails).
        self.write_failure: str | None = None
        self.file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="piko-sqlite", daemon=True)
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
        if self._open_error is not None:
            raise StoreUnavailable(f"cannot open SQLite file {self.path}: {self._open_error}") from None

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)
        self._thread = None

    async def call(self, fn: Op, *, is_write: bool, is_urgent: bool = False) -> Any:
        """Run fn(conn) on the thread. Urgent calls jump the queue (they wait one batch at most)."""
        if self._thread is None:
            raise StoreError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        call = _Call(fn, is_write, fut, loop)
        if is_urgent:
            self._urgent.append(call)
            self._queue.put(_WAKE)
        else:
            self._queue.put(call)
        return await fut

    # -- the thread ------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.mode == "ro":
            return self._connect_read_only()
        target, is_uri = (self.path, False) if self.mode == "rwc" else (sqlite_access.uri(self.path, self.mode), True)
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=is_uri,
                               timeout=self._busy_timeout_s)
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
        try:
            self._enter_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        self.file_id = _file_id(self.path)
        return conn

    def _enter_wal(self, conn: sqlite3.Connection) -> None:
        """SQLite answers 'database is locked' at once, without its busy handler, when another
        process is switching the same new file to WAL: two piko processes started together on one
        file (a scheduler and a worker) must both open it, so this waits up to busy_timeout."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _connect_read_only(self) -> sqlite3.Connection:
        """mode=ro changes nothing. A WAL file in a folder this user cannot write cannot get its -shm
        file while no writer has it open: it is then read as immutable (no other process writes it)."""
        error: sqlite3.Error | None = None
        for is_immutable in (False, True):
            conn = sqlite3.connect(sqlite_access.uri(self.path, "ro", is_immutable=is_immutable),
                                   isolation_level=None, check_same_thread=False, uri=True,
                                   timeout=self._busy_timeout_s)
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opening is lazy: read once
            except sqlite3.Error as exc:
                conn.close()
                error = error or exc
                if not any(w in str(exc).lower() for w in ("readonly", "unable to open")):
                    break  # not the missing -shm file: reading it as immutable would not help
                continue
            self.file_id = _file_id(self.path)
            return conn
        assert error is not None
        raise error

    def file_problem(self) -> str | None:
        """Why the path no longer names the file this worker has open (deleted, replaced)."""
        if self.file_id is None:
            return None
        try:
            now = _file_id(self.path)
        except FileNotFoundError:
            return f"the database file {self.path} was deleted while open: writes go nowhere"
        except OSError as exc:
            return f"the database file {self.path} cannot be checked: {exc}"
        if now != self.file_id:
            return f"the database file {self.path} was replaced while open: this process writes to the old one"
        return None

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to start()
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [] if first is _WAKE else [first]
                while len(batch) < self._batch_max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        self._queue.put(_STOP)
                        break
                    if item is not _WAKE:
                        batch.append(item)
                self._run_urgent(conn)
                if batch:
                    self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_urgent(self, conn: sqlite3.Connection) -> None:
        urgent = []
        while self._urgent:
            urgent.append(self._urgent.popleft())
        if urgent:
            self._run_batch(conn, urgent)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Call]) -> None:
        results: list[tuple[_Call, bool, Any]] = []
        if not any(c.is_write for c in batch):
            for call in batch:
                results.append(self._run_one(conn, call, savepoint=False))
            self._deliver(results)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._note_write_error(exc)
            err = StoreError(f"SQLite {self.path}: cannot start a write transaction: {exc}")
            self._deliver([(c, False, err) for c in batch])
            return
        for call in batch:
            results.append(self._run_one(conn, call, savepoint=True))
            if not results[-1][1] and isinstance(results[-1][2], StoreError):
                self._note_write_error(results[-1][2].__cause__)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._note_write_error(exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = StoreError(f"SQLite {self.path}: commit failed: {exc}")
            results = [(c, False, err) for c, _, _ in results]
        else:
            if any(ok for _, ok, _ in results):
                self.write_failure = None
        self._deliver(results)

    def _note_write_error(self, exc: BaseException | None) -> None:
        if not isinstance(exc, sqlite3.Error):
            return
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        text = str(exc)
        if (code is not None and code & 0xFF in _STUCK_CODES) or any(w in text.lower() for w in _STUCK_WORDS):
            self.write_failure = text

    @staticmethod
    def _run_one(conn: sqlite3.Connection, call: _Call, *, savepoint: bool) -> tuple[_Call, bool, Any]:
        if savepoint:
            conn.execute("SAVEPOINT op")
        try:
            value = call.fn(conn)
        except BaseException as exc:
            if savepoint:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            if isinstance(exc, sqlite3.Error):
                cause = exc
                exc = StoreError(f"SQLite error: {exc}")
                exc.__cause__ = cause
            elif isinstance(exc, StopIteration):  # a future refuses it, and its caller would wait forever
                exc = RuntimeError(f"store operation raised StopIteration: {exc!r}")
            return call, False, exc
        if savepoint:
            conn.execute("RELEASE op")
        return call, True, value

    @staticmethod
    def _deliver(results: list[tuple[_Call, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Call, bool, Any]]] = {}
        for item in results:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, items)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass


def _file_id(path: str) -> tuple[int, int] | None:
    if path == ":memory:" or path.startswith("file:") or not path:
        return None
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _resolve_all(items: list[tuple[_Call, bool, Any]]) -> None:
    for call, ok, value in items:
        if call.future.done():
            continue
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(value)
