"""Leader election: a lease loop over the LeaseStore, started and stopped like every component.

The database decides who holds the lease and with which fencing token, by its own clock
(Store.lease_acquire). Locally we trust only the monotonic clock: the term is valid until
deadline = (monotonic time taken BEFORE sending the acquire) + lease - margin, so the
leader stops acting by its deadline even while a renew is still in flight or failing.
Store errors never crash the loop: they are logged (rate-limited) and retried on the
renew interval. Imports no store implementation and no other component.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from piko.core.types import Fence, LeaseGrant
from piko.protocols import Clock, LeaseStore

log = logging.getLogger("piko.leader")
ERROR_LOG_EVERY_S = 60.0  # at most one warning per minute while the store keeps failing


def safety_margin_s(lease_s: float) -> float:
    """Clock granularity (1 ms) plus 0.1 % for drift between the local and the DB clock rates."""
    return 0.001 + 0.001 * lease_s


class LeaderElector:
    """`async with LeaderElector(store, ...) as elector:` campaigns until the block exits.

    on_change(is_leader) is called on every transition, also when a term runs out without a
    successful renew (a timer watches the deadline). metrics.leader_status{host} is 1 / 0.
    """

    def __init__(self, store: LeaseStore, *, name: str, holder: str, lease_s: float, renew_interval_s: float,
                 clock: Clock, on_change: Callable[[bool], Any] | None = None, metrics: Any = None,
                 host: str | None = None, is_holder_dead: Callable[[str], bool] | None = None) -> None:
        if not 0 < renew_interval_s < lease_s:
            raise ValueError(f"renew_interval_s must be > 0 and below lease_s ({lease_s}), "
                             f"got {renew_interval_s}; about a third of the lease is usual")
        self.store, self.name, self.holder = store, name, holder
        self.lease_s, self.renew_interval_s = lease_s, renew_interval_s
        self._ttl = timedelta(seconds=lease_s)
        self._margin_s = safety_margin_s(lease_s)
        self._clock = clock
        self._on_change = on_change
        self._gauge = metrics.leader_status.labels(host=host or socket.gethostname()) if metrics else None
        self._token: int | None = None  # our current term, if any
        self._deadline = float("-inf")  # monotonic; we act as leader only before it
        self._is_stopping = False
        self._reported = False
        self._leader_event = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._errors = 0
        self._last_error_log = float("-inf")
        self._is_holder_dead = is_holder_dead  # e.g. same host and its pid is gone: no need to wait it out
        self._waiting_for: str | None = None  # the holder we last said we wait for
        if self._gauge is not None:
            self._gauge.set(0)

    # -- what the kernel asks ---------------------------------------------------------------
    def is_leader(self) -> bool:
        return not self._is_stopping and self._token is not None and self._clock.monotonic() < self._deadline

    def fence(self) -> Fence | None:
        """The current term's fence, for writes that only the leader may make."""
        token = self._token
        return Fence(self.name, self.holder, token) if token is not None and self.is_leader() else None

    async def wait_until_leader(self) -> None:
        while not self.is_leader():
            await self._leader_event.wait()
            self._report()  # the term may have run out before we woke: that clears the event

    # -- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> LeaderElector:
        """Campaign once before returning (a lone instance leads at once), then keep campaigning."""
        self._stop_event.clear()
        self._is_stopping = False
        await self._campaign_once()
        self._report()
        self._task = asyncio.create_task(self._lease_loop(), name=f"piko-leader-{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Step down: stop acting at once, stop campaigning, release the lease."""
        self._is_stopping = True
        self._report()
        self._stop_event.set()
        task, self._task = self._task, None
        if task is not None:
            # Let an in-flight acquire finish (so we know the token to release), but not forever.
            done, _ = await asyncio.wait({task}, timeout=min(self.lease_s, 5.0))
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.cancelled() and task.exception() is not None:
                log.error("leader loop %r failed", self.name, exc_info=task.exception())
        token, self._token = self._token, None
        self._report()
        if token is not None:
            try:
                await self.store.lease_release(self.name, self.holder, token)
                log.info("released leader lease %r (term %d)", self.name, token)
            except Exception as exc:  # the lease simply expires
                log.warning("could not release leader lease %r: %s", self.name, exc)

    # -- the loop -------------------------------------------------------------------------------
    async def _lease_loop(self) -> None:
        while True:
            wait_s = self.renew_interval_s
            if self.is_leader():  # wake at the deadline too, to report a term that ran out
                wait_s = min(wait_s, self._deadline - self._clock.monotonic())
            await self._clock.wait(self._stop_event, max(0.0, wait_s))
            self._report()
            if self._stop_event.is_set():
                return
            await self._campaign_once()
            self._report()

    async def _campaign_once(self) -> None:
        """One acquire-or-renew; while it is in flight, a timer still ends the term on time."""
        sent_at = self._clock.monotonic()
        call = asyncio.ensure_future(self.store.lease_acquire(self.name, self.holder, self._ttl))
        finished = asyncio.Event()
        call.add_done_callback(lambda _: finished.set())
        try:
            while not call.done():
                if self.is_leader():
                    await self._clock.wait(finished, max(0.0, self._deadline - self._clock.monotonic()))
                    self._report()
                else:
                    await finished.wait()
        except asyncio.CancelledError:
            call.cancel()
            raise
        try:
            grant = call.result()
        except Exception as exc:
            self._note_error(exc)  # keeps the current deadline: an error never extends a term
            return
        self._note_recovery()
        if grant is None and await self._evict_dead_holder():
            await self._campaign_once()  # its term is over: ask again at once
            return
        self._apply(grant, sent_at)

    async def _evict_dead_holder(self) -> bool:
        """End the term of a holder whose process is known dead; True if one was ended.

        Safe: lease_release ends exactly that holder's term (holder and token must match), and
        fencing would refuse its writes anyway. Only used where death is certain (same host, no pid).
        """
        try:
            current = await self.store.lease_holder(self.name)
        except Exception as exc:
            self._note_error(exc)
            return False
        if current is None:
            return False
        holder, token = current
        if self._is_holder_dead is not None and self._is_holder_dead(holder):
            log.warning("leader lease %r: holder %s (term %d) is gone (its process died); ending its term",
                        self.name, holder, token)
            await self.store.lease_release(self.name, holder, token)
            return True
        if self._waiting_for != holder:
            self._waiting_for = holder
            log.info("leader lease %r is held by %s; standing by (taking over if it is not renewed within "
                     "%.0fs)", self.name, holder, self.lease_s)
        return False

    def _apply(self, grant: LeaseGrant | None, sent_at: float) -> None:
        if grant is None:
            if self._token is not None:
                log.warning("leader lease %r is held by another instance; stepping down", self.name)
            self._token = None
            return
        if grant.token != self._token:
            log.info("leader lease %r: %s term %d", self.name, self.holder, grant.token)
        self._token = grant.token
        self._deadline = sent_at + self.lease_s - self._margin_s

    def _report(self) -> None:
        """Tell on_change, the gauge and wait_until_leader about a change of role."""
        is_leader = self.is_leader()
        if is_leader == self._reported:
            return
        self._reported = is_leader
        if is_leader:
            self._leader_event.set()
        else:
            self._leader_event.clear()
            if self._token is not None and not self._is_stopping:
                log.warning("leader lease %r: term %d ran out before a renew succeeded", self.name, self._token)
        if self._gauge is not None:
            self._gauge.set(1 if is_leader else 0)
        if self._on_change is not None:
            try:
                self._on_change(is_leader)
            except Exception:
                log.exception("leader on_change callback failed")

    def _note_error(self, exc: Exception) -> None:
        self._errors += 1
        now = self._clock.monotonic()
        if now - self._last_error_log >= ERROR_LOG_EVERY_S:
            self._last_error_log = now
            log.warning("leader lease %r: renew failed (%d failure(s) so far, retrying every %.1fs): %s",
                        self.name, self._errors, self.renew_interval_s, exc)

    def _note_recovery(self) -> None:
        if self._errors:
            log.info("leader lease %r: store reachable again after %d failure(s)", self.name, self._errors)
            self._errors = 0
            self._last_error_log = float("-inf")
