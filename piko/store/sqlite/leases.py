"""The leader lease and fenced writes on SQLite, run on the store's worker thread.

One UPDATE decides a term by the host clock as SQLite reads it (dialect.NOW_MS); a fenced
write first checks, inside its own write transaction, that its term is still current.
"""

from __future__ import annotations

import sqlite3

from piko.core.types import Fence, LeaseGrant
from piko.errors import LeaseLost
from piko.store.codec import from_db
from piko.store.sqlite import dialect


def check_fence(conn: sqlite3.Connection, fence: Fence | None) -> None:
    if fence is None:
        return
    if conn.execute(dialect.CHECK_FENCE, (fence.lease_name, fence.holder, fence.token)).fetchone() is None:
        raise LeaseLost(f"leader term {fence.token} of {fence.holder!r} is no longer current")


def acquire(conn: sqlite3.Connection, name: str, holder: str, ttl_ms: int) -> LeaseGrant | None:
    conn.execute(dialect.SEED_LEASE, (name,))
    (old_token,) = conn.execute("SELECT token FROM piko_lease WHERE name = ?", (name,)).fetchone()
    cur = conn.execute(dialect.ACQUIRE_LEASE, {"me": holder, "ttl": ttl_ms, "name": name})
    if cur.rowcount != 1:
        return None
    token, expires = conn.execute("SELECT token, expires_at FROM piko_lease WHERE name = ?", (name,)).fetchone()
    return LeaseGrant(int(token), int(token) != int(old_token), from_db(expires / 1000.0))


def holder_of(conn: sqlite3.Connection, name: str) -> tuple[str, int] | None:
    row = conn.execute(dialect.LEASE_HOLDER, (name,)).fetchone()
    return (str(row[0]), int(row[1])) if row else None
