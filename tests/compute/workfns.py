"""Picklable functions for the CPU pool tests (workers import them by module path)."""

from __future__ import annotations

import os
import signal
import time


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def burn(n: int) -> int:
    """Pure-Python CPU work: about n * 1e5 loop steps."""
    total = 0
    for i in range(n * 100_000):
        total += i % 7
    return total


def burn_for(seconds: float) -> int:
    """Spin the CPU for a wall-clock duration."""
    end = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return spins


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def pid() -> int:
    return os.getpid()


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def raise_value_error(message: str) -> None:
    raise ValueError(message)


class NeedsTwoArgs(Exception):
    """An exception that pickles but cannot be rebuilt (its __init__ wants two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def raise_needs_two_args() -> None:
    raise NeedsTwoArgs("x", "y")


def exit_hard(code: int = 3) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_on(x: int, bad: int = 5) -> int:
    if x == bad:
        os._exit(7)
    return x


def system_exit() -> None:
    raise SystemExit(2)


def system_exit_on(x: int, bad: int = 1) -> int:
    if x == bad:
        raise SystemExit(2)
    return x


def fail_at_37(x: int) -> int:
    return fail_on(x, bad=37)


def return_lambda() -> object:
    return lambda: None


def write_marker(path: str) -> None:
    """Initializer: leave a file per worker so a test can count initialised workers."""
    with open(os.path.join(path, str(os.getpid())), "w") as f:
        f.write("ok")


def read_markers(path: str) -> list[str]:
    return sorted(os.listdir(path))


def failing_initializer() -> None:
    raise RuntimeError("initializer broke")


def concat(acc: object, x: object) -> object:
    return acc + x  # type: ignore[operator]


def wants_timeout(*, timeout: float) -> float:
    """A user function with its own keyword named timeout (reached via functools.partial)."""
    return timeout


def mark_then_sleep(folder: str, seconds: float, item: int) -> int:
    """Leave `item-pid-ns` in folder as the call starts (a test sees which worker runs which
    item, and whether an item ran twice), then sleep; bind folder and seconds with partial."""
    with open(os.path.join(folder, f"{item}-{os.getpid()}-{time.monotonic_ns()}"), "w"):
        pass
    time.sleep(seconds)
    return item
