"""map_reduce's bookkeeping on the loop: chunks in flight, results in input order, and
errors that say where they happened.

A failing item's own exception is raised (callers catch its type); the worker reports
which item of its chunk raised, and a note (Python >= 3.11) names the call, the chunk, its
items and that item. Errors with no failing item (a worker died) name the chunk in their
message already. A whole-call timeout is one OffloadTimeout for the call, counting the
chunks done. Must not import the pool or the manager.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from piko.compute.worker import OffloadTimeout, RemoteTraceback

T = TypeVar("T")

_CHUNKS_PER_WORKER = 4
# What a timeout did to the chunks still out, as the local pool does it (a backend says its own).
LOCAL_TIMEOUT = "its running chunks' workers were killed and replaced, queued chunks never started"


def default_chunksize(n_items: int, width: int) -> int:
    """About four chunks per worker: big enough to hide per-call cost, small enough to balance."""
    return max(1, math.ceil(n_items / (_CHUNKS_PER_WORKER * width)))


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass(frozen=True)
class Chunk:
    index: int
    first_item: int
    size: int

    def describe(self) -> str:
        return f"chunk {self.index}, items {self.first_item}-{self.first_item + self.size - 1}"


class ChunkCollector:
    """The chunks of one map_reduce call: hand them out, gather them, explain failures."""

    def __init__(self, label: str, items: Iterable[Any], chunksize: int, timeout_s: float | None,
                 *, on_timeout: str = LOCAL_TIMEOUT) -> None:
        self._label, self._on_timeout = label, on_timeout
        self._items, self._chunksize = items, chunksize
        self._total = math.ceil(len(items) / chunksize) if isinstance(items, Sized) else None
        self._timeout_s = timeout_s
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout_s is None else loop.time() + timeout_s
        self._parts: list[list[Any]] = []
        self._in_flight: dict[asyncio.Future[Any], Chunk] = {}
        self._sent_count = self._done_count = 0

    async def run(self, limit: int, send: Callable[[Chunk, list[Any]], asyncio.Future[Any]]) -> list[Any]:
        """Send every chunk (`send` returns its future), at most `limit` out at once; the
        results in input order. On the first failure, a timeout or cancellation, every chunk
        still out is cancelled before the error goes up."""
        try:
            for chunk, items in self.chunks():
                while self.in_flight_count >= limit:
                    await self.collect()
                self.add(send(chunk, items), chunk)
            while self.in_flight_count:
                await self.collect()
        finally:
            self.cancel_all()
        return self.results()

    def chunks(self) -> Iterator[tuple[Chunk, list[Any]]]:
        for index, items in enumerate(chunked(self._items, self._chunksize)):
            self._parts.append([])
            yield Chunk(index, index * self._chunksize, len(items)), items
        self._total = len(self._parts)  # the input is exhausted: now the count is known

    def add(self, future: asyncio.Future[Any], chunk: Chunk) -> None:
        self._in_flight[future] = chunk
        self._sent_count += 1

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    async def collect(self) -> None:
        """Wait for at least one chunk; raise the earliest failed chunk's error, or the timeout."""
        left = None if self._deadline is None else max(0.0, self._deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait(self._in_flight, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise OffloadTimeout(self._timeout_message())
        failed: list[tuple[Chunk, Exception]] = []
        for future in done:
            chunk = self._in_flight.pop(future)
            try:
                self._parts[chunk.index] = future.result()
                self._done_count += 1
            except Exception as exc:
                failed.append((chunk, exc))
        if failed:
            first, error = min(failed, key=lambda pair: pair[0].index)
            _note_failed_item(error, self._label, first)
            raise error

    def cancel_all(self) -> None:
        """Cancel every chunk still out (the local pool drops queued chunks and replaces the
        workers of running ones; the Dask backend releases their tasks)."""
        for future in self._in_flight:
            if not future.cancel() and not future.cancelled():
                future.exception()  # finished meanwhile: retrieved, so asyncio does not warn

    def results(self) -> list[Any]:
        return [x for part in self._parts for x in part]

    def _timeout_message(self) -> str:
        of = f"{self._done_count} of {self._total} chunks done" if self._total is not None else (
            f"{self._done_count} chunks done ({self._sent_count} sent; the rest of the input was not read)"
        )
        return (
            f"map_reduce({self._label}) timed out after {self._timeout_s:g}s with {of}; {self._on_timeout}"
        )


def _note_failed_item(exc: Exception, label: str, chunk: Chunk) -> None:
    cause = exc.__cause__
    if not isinstance(cause, RemoteTraceback) or cause.item_index is None:
        return  # not an item's own error: the message names the chunk already
    note = f"in map_reduce({label}) {chunk.describe()}: item {chunk.first_item + cause.item_index} raised"
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(note)
