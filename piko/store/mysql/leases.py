"""The leader lease and fenced writes on MySQL: async steps on a cursor, inside the caller's
transaction, decided by the server clock (UTC_TIMESTAMP(6)) only. See docs/mysql.md.
"""

from __future__ import annotations

from typing import Any

from piko.core.types import Fence, LeaseGrant
from piko.errors import LeaseLost
from piko.store.codec import from_db
from piko.store.mysql import dialect as my


async def check_fence(cur: Any, fence: Fence | None) -> None:
    if fence is None:
        return
    await cur.execute(my.CHECK_FENCE, (fence.lease_name, fence.holder, fence.token))
    if await cur.fetchone() is None:
        raise LeaseLost(f"leader term {fence.token} of {fence.holder!r} is no longer current")


async def acquire(cur: Any, args: dict[str, Any]) -> LeaseGrant | None:
    """One acquire-or-renew (variant B): the UPDATE decides, then the grant is read back."""
    await cur.execute(my.ACQUIRE_LEASE, args)
    if cur.rowcount != 1:
        return None
    await cur.execute(my.READ_GRANT, (args["name"],))  # not lastrowid: a trigger's insert would reset it
    token, is_new_term, expires_at = await cur.fetchone()
    return LeaseGrant(int(token), bool(is_new_term), from_db(expires_at))


async def holder_of(cur: Any, name: str) -> tuple[str, int] | None:
    await cur.execute(my.LEASE_HOLDER, (name,))
    row = await cur.fetchone()
    return (str(row[0]), int(row[1])) if row else None
