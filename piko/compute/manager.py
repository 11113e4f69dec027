"""CPU offload for jobs: `await cpu_manager.submit(fn, ...)` and `map_reduce(...)`.

CpuManager is the public face (an async context manager, like every piko component); the
pool of worker processes behind it (compute/pool.py) starts on the first call. Calls are
pickled here, on the event loop, so an unpicklable function is refused before anything is
sent. map_reduce ships items in chunks and keeps results in input order. Calls made inside
a job (the runner sets `current_job`) occupy at most `per_job_cap` workers at once.
Must not import the kernel, the app or other components.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import multiprocessing
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from itertools import islice
from types import TracebackType
from typing import Any, TypeVar

from piko.compute import worker as wire
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
    "current_job",
    "default_workers",
]

T = TypeVar("T")

# The id of the job whose run is executing in this context (set by the runner), or None.
current_job: ContextVar[str | None] = ContextVar("piko_current_job", default=None)

_CHUNKS_PER_WORKER = 4


def default_workers() -> int:
    """Cores this process may use, minus one for the event loop; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def default_chunksize(n_items: int, width: int) -> int:
    """About four chunks per worker: big enough to hide per-call cost, small enough to balance."""
    return max(1, math.ceil(n_items / (_CHUNKS_PER_WORKER * width)))


def context_for(start_method: str | None) -> Any:
    """forkserver where available (fast restarts, safe with threads), else spawn."""
    if start_method is None:
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if start_method not in ("spawn", "forkserver"):
        raise ConfigError(
            f"start_method {start_method!r} is not allowed: use 'forkserver' or 'spawn' "
            "('fork' is unsafe in a process running an event loop and threads)"
        )
    return multiprocessing.get_context(start_method)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class CpuManager:
    """A lazily started process pool for CPU-bound calls, bound to one event loop."""

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
        for name, value in (
            ("workers", workers),
            ("per_job_cap", per_job_cap),
            ("max_tasks_per_worker", max_tasks_per_worker),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1 or None, got {value!r}")
        self.workers = workers or default_workers()
        self.per_job_cap = per_job_cap
        self.max_tasks_per_worker = max_tasks_per_worker
        self._context = context_for(start_method)
        if initializer is not None:
            _check_picklable(initializer, f"the initializer {_describe(initializer)}")
        self._initializer, self._initargs = initializer, tuple(initargs)
        self._pool: WorkerPool | None = None
        self._is_closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop; the worker processes start on the first call."""
        self._ensure_pool()

    async def warm_up(self) -> None:
        """Start all workers now instead of on the first call (e.g. at app start-up)."""
        await self._ensure_pool().warm_up()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting calls, let running ones finish within timeout_s, then stop workers."""
        self._is_closed = True
        if self._pool is not None:
            await self._pool.close(timeout_s)

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
        label = _describe(fn)
        payload = _pack(fn, args, kwargs, label)
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
        first chunk to fail cancels the others and its exception is raised. `timeout`
        covers the whole call.
        """
        label = _describe(map_fn)
        _check_picklable(map_fn, label)
        pool = self._ensure_pool()
        job = current_job.get()
        width = min(pool.size, self.per_job_cap or pool.size) if job is not None else pool.size
        if chunksize is None:
            items = items if isinstance(items, Sequence) else list(items)
            chunksize = default_chunksize(len(items), width)
        if chunksize < 1 or (concurrency is not None and concurrency < 1):
            raise ValueError(
                f"chunksize and concurrency must be at least 1, got {chunksize} and {concurrency}"
            )
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        parts: list[list[Any]] = []
        in_flight: dict[asyncio.Future[Any], int] = {}
        try:
            for index, chunk in enumerate(chunked(items, chunksize)):
                while len(in_flight) >= (concurrency or 2 * width):
                    await _collect(in_flight, parts)
                chunk_label = (
                    f"{label} (chunk {index}, items {index * chunksize}-{index * chunksize + len(chunk) - 1})"
                )
                payload = _pack(wire.map_chunk, (map_fn, chunk), {}, label)
                parts.append([])
                future = pool.submit(payload, chunk_label, job, deadline=deadline, timeout_s=timeout)
                in_flight[future] = index
            while in_flight:
                await _collect(in_flight, parts)
        finally:
            for future in in_flight:
                future.cancel()  # queued chunks are dropped, running ones' workers replaced
        results = [x for part in parts for x in part]
        return results if reduce_fn is None else functools.reduce(reduce_fn, results)

    def _ensure_pool(self) -> WorkerPool:
        if self._is_closed:
            raise OffloadError("this CpuManager is closed; no new calls are accepted")
        loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = WorkerPool(
                self.workers,
                context=self._context,
                per_job_cap=self.per_job_cap,
                initializer=self._initializer,
                initargs=self._initargs,
                max_tasks_per_worker=self.max_tasks_per_worker,
            )
        elif self._pool.loop is not loop:
            raise OffloadError("this CpuManager was started on another event loop; use one per loop")
        return self._pool


async def _collect(in_flight: dict[asyncio.Future[Any], int], parts: list[list[Any]]) -> None:
    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
    for future in done:
        parts[in_flight.pop(future)] = future.result()  # raises the chunk's error, if any


def _describe(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    if isinstance(fn, functools.partial):
        return f"functools.partial({_describe(fn.func)}, ...)"
    return f"{module}.{name}" if module else str(name)


def _check_picklable(fn: Callable[..., Any], label: str) -> None:
    if inspect.iscoroutinefunction(fn):
        raise UnpicklableCallError(
            f"cannot send {label} to the CPU pool: it is an async function; send a plain def"
        )
    try:
        pickle.dumps(fn, wire.PROTOCOL)
    except Exception as exc:
        local = "<lambda>" in label or "<locals>" in label
        why = ("lambdas and nested functions are pickled by name and have none; " if local else "") + (
            "define it with def at module top level"
        )
        raise UnpicklableCallError(
            f"cannot send {label} to the CPU pool: it cannot be pickled ({why}); pickle said: {exc}"
        ) from exc


def _pack(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], label: str) -> bytes:
    """Pickle one call on the loop (fine for typical sizes; see docs/offload.md)."""
    _check_picklable(fn, label)
    try:
        return pickle.dumps((fn, args, kwargs), wire.PROTOCOL)
    except Exception as exc:
        raise UnpicklableCallError(
            f"cannot send the arguments of {label} to the CPU pool: they cannot be pickled ({exc})"
        ) from exc
