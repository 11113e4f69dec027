"""One CPU worker process as the pool sees it: its record, its task, its frame reader, its exit.

The pool (compute/pool.py) decides what a worker does; this module only holds what one
worker and one task are, and the effects on a worker that need no decision: reading frames
off its socket, naming how it exited, and killing workers outright when their loop is gone.
Imports nothing from piko but compute.worker (the wire format) and compute.states.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from piko.compute import worker as wire
from piko.compute.states import TaskState, WorkerState, advance

_JOIN_BUDGET_S = 2.0  # reaping SIGKILLed processes takes milliseconds; this is a ceiling


@dataclass(eq=False)
class Task:
    """One call (or one map_reduce chunk) on its way through the pool."""

    payload: bytes
    label: str  # names the function (and chunk) in error messages
    job: str | None
    timeout_s: float | None
    future: asyncio.Future[Any]
    state: TaskState = TaskState.QUEUED
    worker: WorkerProcess | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class WorkerProcess:
    process: Any  # multiprocessing.process.BaseProcess
    sock: socket.socket  # the parent's end of the socketpair
    pid: int | None = None
    state: WorkerState = WorkerState.STARTING
    transport: asyncio.Transport | None = None
    task: Task | None = None
    tasks_done: int = 0
    is_ready: bool = False  # it reported READY once: a death before that is a failed start


class FrameReader(asyncio.Protocol):
    """Splits the byte stream from one worker into frames (see worker.HEADER)."""

    def __init__(self, on_frame: Callable[[bytearray], None], on_lost: Callable[[], None]) -> None:
        self._on_frame, self._on_lost = on_frame, on_lost
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        head = wire.HEADER.size
        while len(buf) >= head:
            size = wire.HEADER.unpack_from(buf)[0]
            if len(buf) < head + size:
                return
            frame = buf[head : head + size]
            del buf[: head + size]
            self._on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


def kill_without_loop(workers: Iterable[WorkerProcess], loop: asyncio.AbstractEventLoop) -> None:
    """SIGKILL and reap workers without needing their loop to run (it may be closed).

    Their transports are dropped (aborted while the loop is still open, so its selector
    forgets their sockets) and the processes are joined in this thread, which takes
    milliseconds after SIGKILL.
    """
    workers = list(workers)
    for w in workers:
        if w.state is not WorkerState.DEAD:  # an exited worker may still be waiting to be reaped
            w.state = advance(w.state, WorkerState.DEAD)
        if not loop.is_closed():
            with contextlib.suppress(ValueError, AttributeError):  # process closed, or never started
                loop.remove_reader(w.process.sentinel)
            if w.transport is not None:
                w.transport.abort()
        w.sock.close()
        with contextlib.suppress(ValueError, AttributeError, OSError):  # closed, never started, gone
            w.process.kill()
    deadline = time.monotonic() + _JOIN_BUDGET_S
    for w in workers:
        with contextlib.suppress(ValueError, AttributeError, AssertionError):  # as above
            w.process.join(max(0.0, deadline - time.monotonic()))
            w.process.close()


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "it did not exit"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"
