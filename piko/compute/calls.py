"""What a CPU call is before it goes anywhere: its arguments checked, its function and
arguments pickled, and the job it belongs to.

Every backend (compute/manager.py's own worker processes, compute/dask_backend.py's Dask
cluster) checks and packs a call here, on the loop, so a lambda or a bad `chunksize` is
refused the same way, before anything is sent, whichever backend runs it. The packed call
is the frame compute/worker.py's run_call() unpacks. Imports nothing from piko but errors
and the wire.
"""

from __future__ import annotations

import inspect
import numbers
import pickle
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from piko.compute import worker as wire
from piko.compute.worker import UnpicklableCallError

# The id of the job whose run is executing in this context (set by the runner), or None.
current_job: ContextVar[str | None] = ContextVar("piko_current_job", default=None)


def check_count(name: str, value: object) -> int | None:
    """A positive int or None, as an int. TypeError for other types (bool too: True is not
    a count, though Python calls it 1), ValueError below 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int of at least 1 or None, got {value!r} ({type(value).__name__})")
    count = int(value)
    if count < 1:
        raise ValueError(f"{name} must be an int of at least 1 or None, got {value!r}")
    return count


def check_timeout(value: object) -> float | None:
    """Seconds as a number of at least 0, or None; bools and NaN are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, got {value!r} ({type(value).__name__})")
    seconds = float(value)
    if not seconds >= 0:  # also catches NaN
        raise ValueError(f"timeout must be a number of seconds of at least 0 or None, got {value!r}")
    return seconds


def check_picklable(fn: Callable[..., Any], label: str) -> None:
    """Refuse what no worker could run: an async function, or one pickle cannot send by name."""
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


def pack_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], label: str) -> bytes:
    """Pickle one call on the loop (fine for typical sizes; see docs/offload.md)."""
    check_picklable(fn, label)
    try:
        return pickle.dumps((fn, args, kwargs), wire.PROTOCOL)
    except Exception as exc:
        raise UnpicklableCallError(
            f"cannot send the arguments of {label} to the CPU pool: they cannot be pickled ({exc})"
        ) from exc
