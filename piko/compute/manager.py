"""CPU offload for jobs: `await cpu_manager.submit(fn, ...)` and `map_reduce(...)`.

CpuManager is the public face (an async context manager, like every piko component); the
pool of worker processes behind it (compute/pool.py) starts on the first call, and again on
the first call after close() or on a new event loop (the old loop's workers are killed), so
one manager outlives app restarts and successive asyncio.run() calls. Calls are checked and
pickled on the loop (compute/calls.py), so an unpicklable function is refused before
anything is sent.
map_reduce ships items in chunks (compute/chunks.py) and keeps results in input order.
Calls made inside a job (the runner sets `current_job`) occupy at most `per_job_cap`
workers at once. Must not import the kernel, the app or other components.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from piko.compute import worker as wire
from piko.compute.calls import check_count, check_picklable, check_timeout, current_job, pack_call
from piko.compute.chunks import Chunk, ChunkCollector, chunked, default_chunksize
from piko.compute.pool import WorkerPool
from piko.compute.worker import (
    OffloadTimeout,
    RemoteError,
    RemoteTraceback,
    UnpicklableCallError,
    WorkerDiedError,
)
from piko.errors import ConfigError, OffloadError

__all__ = [
    "CpuManager",
    "OffloadError",
    "OffloadTimeout",
    "RemoteError",
    "RemoteTraceback",
    "UnpicklableCallError",
    "WorkerDiedError",
    "check_count",
    "check_timeout",
    "chunked",
    "current_job",
    "default_chunksize",
    "default_workers",
]

T = TypeVar("T")

log = logging.getLogger("piko.compute")


def default_workers() -> int:
    """Cores this process may use, minus one for the event loop; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def context_for(start_method: str | None) -> Any:
    """forkserver where available (fast restarts, safe with threads), else spawn."""
    if start_method is None:
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if start_method not in ("spawn", "forkserver"):
        raise ConfigError(
            f"start_method {start_method!r} is not allowed: use 'forkserver' or 'spawn' "
            "('fork' is unsafe in a process running an event loop and threads)"
        )
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":  # see forkserver_boot.py; kept with any preload the user set
        from multiprocessing import forkserver

        preload = list(getattr(forkserver._forkserver, "_preload_modules", []))
        if _BOOT not in preload:
            context.set_forkserver_preload([*preload, _BOOT])
    return context


_BOOT = "piko.compute.forkserver_boot"


class CpuManager:
    """A lazily started process pool for CPU-bound calls, on one event loop at a time."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        per_job_cap: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        start_method: str | None = None,
        max_tasks_per_worker: int | None = None,
    ) -> None:
        counts = {"workers": workers, "per_job_cap": per_job_cap, "max_tasks_per_worker": max_tasks_per_worker}
        for name, value in counts.items():
            try:
                counts[name] = check_count(name, value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"CpuManager: {exc}") from None
        self.workers = counts["workers"] or default_workers()
        self.per_job_cap = counts["per_job_cap"]
        self.max_tasks_per_worker = counts["max_tasks_per_worker"]
        self._context = context_for(start_method)
        if initializer is not None:
            check_picklable(initializer, f"the initializer {wire.describe_callable(initializer)}")
        self._initializer, self._initargs = initializer, tuple(initargs)
        self._pool: WorkerPool | None = None
        self._is_closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop; the worker processes start on the first call."""
        self._ensure_pool()

    async def warm_up(self) -> None:
        """Start all workers now instead of on the first call (e.g. at app start-up)."""
        await self._ensure_pool().warm_up()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Refuse new calls, let running ones finish within timeout_s, then stop the workers.

        This ends the pool, not the manager: the first call after close() has returned
        starts a fresh pool (so app.stop() then app.start() keeps app.cpu_manager working).
        If close() itself is cancelled, the remaining workers are killed at once.
        """
        self._forget_ended_loop(asyncio.get_running_loop())
        pool = self._pool
        if pool is None:
            return
        self._is_closing = True
        try:
            await pool.close(timeout_s)
        except BaseException:
            pool.kill_now()
            raise
        finally:
            if self._pool is pool:
                self._pool = None
            self._is_closing = False

    async def __aenter__(self) -> CpuManager:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def pids(self) -> list[int]:
        """Process ids of the current workers (for diagnostics and tests)."""
        return self._pool.pids() if self._pool is not None else []

    # -- calls -----------------------------------------------------------------------

    async def submit(
        self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T:
        """Run fn(*args, **kwargs) in a worker process and return its result.

        `timeout` (seconds, covering the wait for a free worker) belongs to piko, not to
        fn; pass a keyword named timeout through functools.partial. On timeout or
        cancellation a running call's worker is killed and replaced.
        """
        label = wire.describe_callable(fn)
        timeout = check_timeout(timeout)
        payload = pack_call(fn, args, kwargs, label)
        pool = self._ensure_pool()
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        future = pool.submit(payload, label, current_job.get(), deadline=deadline, timeout_s=timeout)
        return await future  # cancelling this await cancels the future, and so the call

    async def map_reduce(
        self,
        map_fn: Callable[[Any], Any],
        items: Iterable[Any],
        concurrency: int | None = None,
        chunksize: int | None = None,
        reduce_fn: Callable[[Any, Any], Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """[map_fn(x) for x in items] computed in workers, in input order; or, with
        reduce_fn, functools.reduce(reduce_fn, those results) folded on the event loop.

        Items travel in chunks of `chunksize` (default: about 4 chunks per worker). At most
        `concurrency` chunks of this call are queued or running at once (default: twice
        the workers this job may use, so a worker never waits for its next chunk). The
        first chunk to fail cancels the others and its exception is raised, with a note
        naming the chunk and the item. `timeout` covers the whole call.
        """
        label = wire.describe_callable(map_fn)
        concurrency = check_count("map_reduce: concurrency", concurrency)
        chunksize = check_count("map_reduce: chunksize", chunksize)
        timeout = check_timeout(timeout)
        check_picklable(map_fn, label)
        pool = self._ensure_pool()
        job = current_job.get()
        width = min(pool.size, self.per_job_cap or pool.size) if job is not None else pool.size
        if chunksize is None:
            items = items if isinstance(items, Sequence) else list(items)
            chunksize = default_chunksize(len(items), width)
        collector = ChunkCollector(label, items, chunksize, timeout)

        def send(chunk: Chunk, chunk_items: list[Any]) -> asyncio.Future[Any]:
            payload = pack_call(wire.map_chunk, (map_fn, chunk_items), {}, label)
            return pool.submit(payload, f"{label} ({chunk.describe()})", job)

        results = await collector.run(concurrency or 2 * width, send)
        return results if reduce_fn is None else functools.reduce(reduce_fn, results)

    def _ensure_pool(self) -> WorkerPool:
        if self._is_closing:
            raise OffloadError("this CpuManager is closing; it accepts calls again once close() has returned")
        self._forget_ended_loop(asyncio.get_running_loop())
        pool = self._pool
        if pool is None:
            pool = self._pool = WorkerPool(
                self.workers,
                context=self._context,
                per_job_cap=self.per_job_cap,
                initializer=self._initializer,
                initargs=self._initargs,
                max_tasks_per_worker=self.max_tasks_per_worker,
            )
        return pool

    def _forget_ended_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop a pool bound to a loop that has ended (a previous asyncio.run), killing its
        workers: nothing can await that loop's calls any more. A loop still running is in
        another thread, with calls perhaps in flight: refused, not taken over."""
        pool = self._pool
        if pool is None or pool.loop is loop:
            return
        if pool.loop.is_running():
            raise OffloadError(
                "this CpuManager is in use by an event loop running in another thread; "
                "create one CpuManager per loop"
            )
        log.info("CPU pool: its event loop has ended; killing its %d worker(s)", len(pool.pids()))
        self._pool = None
        pool.kill_now()

