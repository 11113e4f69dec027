"""CPU offload on an existing Dask cluster (`cpu_backend = "dask"`): the same submit,
map_reduce and close as the local pool (compute/manager.py), run by Dask's workers.

Rules: `distributed` (piko[dask]) is imported here only, in a thread, when the backend first
connects; nothing else in piko imports it. A call travels as the local pool's frame and runs
through worker.run_call on a Dask worker, which never raises: results and errors read as
they do locally, and Dask only carries bytes. The client is asynchronous, on the caller's
loop. A worker lost mid-task is Dask's to retry (its scheduler reruns the task elsewhere, up
to its `allowed-failures`); past that the call fails with WorkerDiedError naming it. Dask
cannot stop a running task: on timeout or cancellation its result is dropped, queued tasks
are released unrun. Must not import the pool or the manager.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import importlib.util
import logging
import pickle
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from piko.compute import worker as wire
from piko.compute.calls import check_count, check_picklable, check_timeout, current_job, pack_call
from piko.compute.chunks import Chunk, ChunkCollector, default_chunksize
from piko.compute.worker import OffloadTimeout, RemoteError, WorkerDiedError
from piko.errors import ConfigError, OffloadError

__all__ = ["INSTALL_HINT", "DaskExecutor", "DaskUnavailable", "require_distributed"]

T = TypeVar("T")

log = logging.getLogger("piko.compute")

INSTALL_HINT = "pip install 'piko[dask]'"
_UNSTOPPABLE = "Dask cannot stop a running task: it runs to its end on its worker and its result is dropped"
_MAP_TIMEOUT = f"queued chunks were released unrun; {_UNSTOPPABLE.replace('task: it runs', 'task: a running chunk runs')}"


class DaskUnavailable(OffloadError):
    """The Dask backend cannot work: `distributed` is not installed, or the scheduler does not answer."""


def require_distributed() -> None:
    """Fail early, without importing it, when `distributed` is not installed."""
    if importlib.util.find_spec("distributed") is None:
        raise DaskUnavailable(f"cpu_backend = 'dask' needs the distributed package, which is not installed here: "
                              f"{INSTALL_HINT}")


@dataclass
class _JobSlots:
    semaphore: asyncio.Semaphore
    users: int = 0


class DaskExecutor:
    """submit / map_reduce on a Dask cluster through one asynchronous Client per event loop.

    The client connects on start() (the app does it at start-up, so a wrong address stops
    the start) or on the first call; after close(), the next call connects again.
    """

    def __init__(self, scheduler: str, *, per_job_cap: int | None = None, connect_timeout_s: float = 10.0) -> None:
        if not scheduler:
            raise ConfigError("DaskExecutor: scheduler must be the Dask scheduler's address, e.g. tcp://host:8786")
        try:
            self.per_job_cap = check_count("per_job_cap", per_job_cap)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"DaskExecutor: {exc}") from None
        require_distributed()
        self.scheduler = scheduler
        self.connect_timeout_s = connect_timeout_s
        self._client: Any = None  # distributed.Client, bound to self._loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Task[Any] | None = None
        self._slots: dict[str, _JobSlots] = {}
        self._out: set[Any] = set()  # Dask futures submitted and not settled yet
        self._settled: asyncio.Event | None = None
        self._is_closing = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the scheduler now; DaskUnavailable names the address if it does not answer."""
        await self._ensure_client()

    async def warm_up(self) -> None:
        """The same as start(): the cluster's workers are already running."""
        await self._ensure_client()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Refuse new calls, let calls out finish within timeout_s, cancel the rest, disconnect.

        The cluster and its workers stay: they are not piko's. The first call after close()
        has returned connects again.
        """
        loop = asyncio.get_running_loop()
        self._forget_ended_loop(loop)
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()  # a connection half made must not open after close()
        client = self._client
        if client is None:
            return
        self._is_closing = True
        deadline = loop.time() + timeout_s
        reserve = min(1.0, timeout_s / 5)  # kept for cancelling and disconnecting
        try:
            await self._wait_for_calls(deadline - reserve)
            if self._out:  # their callers get an OffloadError saying Dask cancelled them
                await client.cancel(list(self._out))
            await asyncio.wait_for(client.close(), max(0.1, deadline - loop.time()))
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("Dask backend: disconnecting from %s: %s: %s", self.scheduler, type(exc).__name__, exc)
        finally:
            self._client, self._is_closing = None, False
            self._slots.clear()

    async def __aenter__(self) -> DaskExecutor:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- calls -------------------------------------------------------------------------

    async def submit(
        self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T:
        """Run fn(*args, **kwargs) on a Dask worker and return its result.

        `timeout` (seconds, covering the wait for a free worker) belongs to piko, not to fn.
        """
        label = wire.describe_callable(fn)
        timeout = check_timeout(timeout)
        payload = pack_call(fn, args, kwargs, label)
        call = asyncio.get_running_loop().create_task(self._call(payload, label, _key_name(fn), current_job.get()))
        try:
            done, _ = await asyncio.wait({call}, timeout=timeout)
        finally:
            call.cancel()  # a no-op once it is done; else its Dask task is released
        if not done:
            raise OffloadTimeout(f"{label} did not finish within {timeout:g}s on the Dask cluster; {_UNSTOPPABLE}")
        return call.result()  # type: ignore[no-any-return]

    async def map_reduce(
        self,
        map_fn: Callable[[Any], Any],
        items: Iterable[Any],
        concurrency: int | None = None,
        chunksize: int | None = None,
        reduce_fn: Callable[[Any, Any], Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """[map_fn(x) for x in items] on Dask workers, in input order; or, with reduce_fn,
        functools.reduce(reduce_fn, those results) folded on the event loop.

        Chunking, `concurrency`, failures and `timeout` as with the local pool; the width
        (the workers one call may use) is the cluster's worker threads when the call starts.
        """
        label = wire.describe_callable(map_fn)
        concurrency = check_count("map_reduce: concurrency", concurrency)
        chunksize = check_count("map_reduce: chunksize", chunksize)
        timeout = check_timeout(timeout)
        check_picklable(map_fn, label)
        client = await self._ensure_client()
        job, threads = current_job.get(), _threads(client)
        width = min(threads, self.per_job_cap or threads) if job is not None else threads
        if chunksize is None:
            items = items if isinstance(items, Sequence) else list(items)
            chunksize = default_chunksize(len(items), width)
        collector = ChunkCollector(label, items, chunksize, timeout, on_timeout=_MAP_TIMEOUT)
        loop, name = asyncio.get_running_loop(), _key_name(map_fn)

        def send(chunk: Chunk, chunk_items: list[Any]) -> asyncio.Future[Any]:
            payload = pack_call(wire.map_chunk, (map_fn, chunk_items), {}, label)
            return loop.create_task(self._call(payload, f"{label} ({chunk.describe()})", name, job))

        results = await collector.run(concurrency or 2 * width, send)
        return results if reduce_fn is None else functools.reduce(reduce_fn, results)

    async def _call(self, payload: bytes, label: str, name: str, job: str | None) -> Any:
        """One packed call as one Dask task; cancelling this coroutine releases the task."""
        client = await self._ensure_client()
        async with self._slot(job):
            future = client.submit(wire.run_call, payload, key=f"piko-{name}-{uuid.uuid4().hex}", pure=False)
            self._out.add(future)
            gathering: asyncio.Future[Any] | None = None
            try:
                await _finished(future)  # a cancel here stops only this wait
                gathering = asyncio.ensure_future(_fetch(future))
                reply = await asyncio.shield(gathering)  # a cancel here leaves the fetch to finish
            except Exception as exc:  # Dask's own failure: run_call never raises
                raise _dask_failure(exc, label) from exc
            finally:
                if gathering is None or gathering.done():
                    future.release()  # a queued task is dropped; a running one's result is not kept
                else:  # cancelled while fetching a finished result: released once the fetch is over
                    gathering.add_done_callback(functools.partial(_release_after, future))
                self._out.discard(future)
                if self._settled is not None:
                    self._settled.set()
        return _read_reply(reply, label)

    # -- the client --------------------------------------------------------------------

    async def _ensure_client(self) -> Any:
        if self._is_closing:
            raise OffloadError("this Dask backend is closing; it accepts calls again once close() has returned")
        loop = asyncio.get_running_loop()
        self._forget_ended_loop(loop)
        client = self._client
        if client is not None and client.status not in ("closing", "closed"):
            return client
        if client is not None:
            log.warning("Dask backend: the client for %s was closed (%s); connecting again", self.scheduler,
                        client.status)
            self._client = None
        if self._connecting is None or self._connecting.get_loop() is not loop:
            self._connecting = loop.create_task(self._connect(loop))
            self._connecting.add_done_callback(_retrieve)
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Any:
        distributed = await asyncio.to_thread(_import_distributed)  # ~0.3 s of imports, off the loop
        try:
            client = await distributed.Client(self.scheduler, asynchronous=True, timeout=self.connect_timeout_s,
                                              set_as_default=False)
        except Exception as exc:
            raise DaskUnavailable(
                f"cannot reach the Dask scheduler at {self.scheduler} (cpu_backend = 'dask'): {type(exc).__name__}: "
                f"{exc}; check that a scheduler runs there and that dask_scheduler (PIKO_DASK_SCHEDULER) is its "
                f"address") from exc
        self._client, self._loop, self._settled = client, loop, asyncio.Event()
        log.info("CPU offload on the Dask cluster at %s (%d worker thread(s) now)", self.scheduler, _threads(client))
        return client

    def _forget_ended_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop a client whose loop has ended (a previous asyncio.run): it cannot be used or
        closed from here; the next call connects again. A loop still running is in another
        thread: refused, as the local pool does."""
        if self._client is None or self._loop is loop:
            return
        if self._loop is not None and self._loop.is_running():
            raise OffloadError("this Dask backend is in use by an event loop running in another thread; "
                               "create one per loop")
        log.info("Dask backend: the event loop of its client has ended; connecting again from this one")
        self._client, self._settled = None, None
        self._out.clear()
        self._slots.clear()

    async def _wait_for_calls(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while self._out and self._settled is not None and loop.time() < deadline:
            self._settled.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._settled.wait(), deadline - loop.time())

    @contextlib.asynccontextmanager
    async def _slot(self, job: str | None) -> AsyncIterator[None]:
        """A call made inside a job holds one of that job's per_job_cap slots while it is out."""
        if job is None or self.per_job_cap is None:
            yield
            return
        slots = self._slots.get(job)
        if slots is None:
            slots = self._slots[job] = _JobSlots(asyncio.Semaphore(self.per_job_cap))
        slots.users += 1
        try:
            async with slots.semaphore:
                yield
        finally:
            slots.users -= 1
            if not slots.users and self._slots.get(job) is slots:
                del self._slots[job]


def _import_distributed() -> Any:
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise DaskUnavailable(f"cpu_backend = 'dask' needs the distributed package ({exc}): {INSTALL_HINT}") from exc


async def _finished(future: Any) -> None:
    """Wait until the Dask task has ended, fetching nothing.

    Dask's client fetches the results of all the calls waiting at once in one shared gather;
    cancelling the call that started it cancels it for every other call, and for later ones
    too (the client keeps the cancelled gather as the pending one, so every later call ends
    CancelledError). So the wait, which a cancel may stop (a failed map_reduce cancels its
    other chunks, a timeout its call), only watches the task's state, and the fetch of an
    ended task's result is shielded from the caller's cancel."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not ended.done():
            ended.set_result(None)

    def on_end(_: Any) -> None:  # Dask calls it from a thread of its own
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle)

    future.add_done_callback(on_end)
    await ended


async def _fetch(future: Any) -> Any:
    return await future


def _release_after(future: Any, gathering: asyncio.Future[Any]) -> None:
    _retrieve(gathering)  # type: ignore[arg-type]
    future.release()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A connect nobody waits for any more (its callers were cancelled) must not warn."""
    if not task.cancelled():
        task.exception()


def _threads(client: Any) -> int:
    """Worker threads in the cluster, from the client's cached scheduler info; at least 1."""
    info = client.scheduler_info() or {}
    total = info.get("total_threads") or sum(w.get("nthreads", 0) for w in (info.get("workers") or {}).values())
    return max(1, int(total or 0))


def _key_name(fn: Callable[..., Any]) -> str:
    """The function's name as a Dask key prefix (the dashboard groups tasks by it)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", wire.describe_callable(fn)).strip("_")[:80] or "call"


def _read_reply(reply: bytes, label: str) -> Any:
    """The value of run_call's reply, or the exception it stands for (as the local pool raises it)."""
    try:
        status, value, text, item_index = pickle.loads(reply)
    except Exception as exc:  # e.g. the result's class cannot be imported here
        raise RemoteError(f"the reply for {label} could not be read here: {type(exc).__name__}: {exc}") from exc
    if status == wire.OK:
        return value
    raise wire.reply_error(status, value, text, label, item_index)


def _dask_failure(exc: Exception, label: str) -> OffloadError:
    """What a failed Dask future means for the call: a worker lost too often, a cancel, or else."""
    if type(exc).__name__ == "KilledWorker" and len(exc.args) >= 3:
        _task, last_worker, allowed = exc.args[:3]
        return WorkerDiedError(
            f"the Dask workers running {label} died {allowed + 1} time(s) in a row (the last: "
            f"{getattr(last_worker, 'address', last_worker)}); Dask gave up on it (its scheduler's "
            f"distributed.scheduler.allowed-failures is {allowed}). Running out of memory is the usual cause: "
            f"see the workers' logs")
    if isinstance(exc, concurrent.futures.CancelledError):
        return OffloadError(f"Dask cancelled {label} (the backend was closing, or the cluster lost it): {exc}")
    return OffloadError(f"Dask could not run {label}: {type(exc).__name__}: {exc}")

