"""The CPU pool's wire protocol: the worker's loop, and what its replies mean.

A worker reads one length-prefixed pickled call, runs it, writes one pickled reply, and
repeats until the parent closes the socket. Frames are an 8-byte big-endian length, then
a pickle; replies are (status, value, traceback_text, item_index), item_index being the
position in a map_reduce chunk of the item that raised (else None). The parent turns a
failed reply into an exception with reply_error(). Workers import this module, so it imports only the
standard library and piko.errors (no asyncio): a replacement worker starts fast.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from piko.errors import OffloadError

HEADER = struct.Struct("!Q")
PROTOCOL = pickle.HIGHEST_PROTOCOL

# Reply statuses.
READY = "ready"  # value: the worker's pid, sent once after the initializer ran
INIT_FAILED = "init_failed"  # the initializer raised; the worker exits after saying so
OK = "ok"  # value: the function's result
RAISED = "raised"  # value: the exception (or None if it could not travel), traceback text
LOAD_FAILED = "load_failed"  # the call could not be unpickled here (module not importable...)
RESULT_UNPICKLABLE = "result_unpicklable"  # the function returned something pickle refuses

_PR_SET_PDEATHSIG = 1


class _ItemFailed(Exception):
    """Carries the position of a chunk's failing item from map_chunk to run_call.

    It never leaves the worker: run_call sends the item's own exception, plus the index.
    """

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index)
        self.index, self.error = index, error


def map_chunk(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """Apply fn to one chunk of a map_reduce call (runs in the worker)."""
    results = []
    for index, item in enumerate(items):
        try:
            results.append(fn(item))
        except BaseException as exc:  # noqa: BLE001 - run_call reports it, with the index
            raise _ItemFailed(index, exc) from None
    return results


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(HEADER.pack(len(payload)))
    sock.sendall(payload)


def recv_frame(sock: socket.socket) -> bytes | None:
    """One frame, or None when the parent closed the socket."""
    header = _recv_exact(sock, HEADER.size)
    if header is None:
        return None
    return _recv_exact(sock, HEADER.unpack(header)[0])


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


def worker_main(
    sock: socket.socket, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> None:
    """Entry point of a worker process (the target of multiprocessing.Process)."""
    # Ctrl-C and a group-wide SIGTERM reach every process of the group; the parent decides how
    # its workers stop (it drains runs first, then closes their sockets or SIGKILLs them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    with sock:
        try:
            _serve(sock, initializer, initargs)
        except (BrokenPipeError, ConnectionResetError):
            return  # the parent closed its end first: nothing left to report to


def _serve(sock: socket.socket, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
            send_frame(sock, _dump_error(INIT_FAILED, exc))
            return
    send_frame(sock, pickle.dumps((READY, os.getpid(), "", None), PROTOCOL))
    while (frame := recv_frame(sock)) is not None:
        send_frame(sock, run_call(frame))


def run_call(frame: bytes) -> bytes:
    """Unpickle (fn, args, kwargs), run it, and pickle the reply; never raises."""
    try:
        fn, args, kwargs = pickle.loads(frame)
    except BaseException as exc:  # noqa: BLE001
        return _dump_error(LOAD_FAILED, exc)
    try:
        value = fn(*args, **kwargs)
    except _ItemFailed as failed:
        return _dump_error(RAISED, failed.error, failed.index)
    except BaseException as exc:  # noqa: BLE001
        return _dump_error(RAISED, exc)
    try:
        return pickle.dumps((OK, value, "", None), PROTOCOL)
    except BaseException as exc:  # noqa: BLE001
        return _dump_error(RESULT_UNPICKLABLE, exc)


def _dump_error(status: str, exc: BaseException, item_index: int | None = None) -> bytes:
    """Send the exception itself when it survives a pickle round trip, else only its text.

    The round trip is tried here because an exception class whose __init__ takes other
    arguments than it passes to super() pickles fine but cannot be rebuilt by the parent.
    SystemExit and KeyboardInterrupt never travel as themselves: re-raised in the parent
    they would stop the scheduler, not just the call.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, Exception):
        try:
            data = pickle.dumps((status, exc, text, item_index), PROTOCOL)
            pickle.loads(data)
            return data
        except BaseException:  # noqa: BLE001 - fall back to the text below
            pass
    return pickle.dumps((status, None, text, item_index), PROTOCOL)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, so no worker outlives piko.

    With forkserver the parent is the fork server, which itself exits when piko does.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


# -- the parent's side: errors, and what a failed reply means ----------------------------


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker (set as __cause__).

    `item_index` is the position in its map_reduce chunk of the item that raised, or None.
    """

    def __init__(self, text: str, item_index: int | None = None) -> None:
        super().__init__(text)
        self.text, self.item_index = text, item_index

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip() + "\n\n(the traceback above comes from the CPU worker)"


class RemoteError(OffloadError):
    """A worker failed with an exception that could not be sent back as itself."""


class UnpicklableCallError(OffloadError, TypeError):
    """A function or its arguments cannot be pickled, so it cannot reach a worker."""


class WorkerDiedError(OffloadError):
    """The worker running a call exited (crash, os._exit, SIGKILL / out of memory)."""

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode


class OffloadTimeout(OffloadError, TimeoutError):
    """A call did not finish within its timeout; its worker was stopped and replaced."""


def describe_callable(fn: Any) -> str:
    """`module.qualname` of a function, for messages."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    if isinstance(fn, functools.partial):
        return f"functools.partial({describe_callable(fn.func)}, ...)"
    return f"{module}.{name}" if module else str(name)


def reply_error(status: str, value: Any, text: str, label: str, item_index: int | None = None) -> Exception:
    """The exception a failed reply stands for, with the worker's traceback as __cause__.

    The original exception when it travelled (so `except ValueError` works in the job),
    else an OffloadError saying what happened to `label` (the function, or chunk).
    """
    last = _last_line(text)
    error: Exception
    if status == RAISED and isinstance(value, Exception):
        error = value
    elif status == RAISED:
        error = RemoteError(f"{label} failed in the CPU worker: {last}")
    elif status == INIT_FAILED:
        error = OffloadError(f"{label} raised in a new CPU worker: {last}")
    elif status == LOAD_FAILED:
        error = UnpicklableCallError(
            f"the CPU worker could not load the call to {label}: is its module importable "
            f"in a fresh interpreter? ({last})"
        )
    elif status == RESULT_UNPICKLABLE:
        error = UnpicklableCallError(
            f"the result of {label} cannot be pickled back from the CPU worker ({last})"
        )
    else:
        error = RemoteError(f"the reply for {label} could not be read: {last}")
    error.__cause__ = RemoteTraceback(text, item_index)
    return error


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "unknown error"
