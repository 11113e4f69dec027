"""The PikoError hierarchy: every error piko raises on purpose is one of these.

Rules: messages say what was wrong and what would be right; they never contain secrets.
This module imports nothing from piko, so every other module may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice


class PikoError(Exception):
    """Base class of every error piko raises deliberately."""


class ConfigError(PikoError, ValueError):
    """A setting, a job registration or a stored row is invalid."""


class WindowWaits(PikoError):
    """A scheduled fire of a CATCH_UP job whose earlier windows are not done yet: its window
    waits its turn (it is recorded SKIPPED and run by the catch-up, oldest first)."""

    def __init__(self, message: str, window: object) -> None:
        super().__init__(message)
        self.window = window  # the DataInterval that waits


class TriggerSpecError(ConfigError):
    """A schedule expression cannot be turned into a trigger.

    `spec` is the offending input (kept as given, never fully repr'd), `field` the part
    that is wrong (or None), `reason` what is wrong and what is allowed. The message shows
    `preview(spec)`: its cost does not grow with the spec, so hostile input (a 50 MB
    string, a million keys, a list nested 5000 deep, 10**5000) is refused as fast as any.
    """

    def __init__(self, spec: object, reason: str, field: str | None = None) -> None:
        self.spec = spec
        self.field = field
        self.reason = reason
        where = f"invalid {field}: " if field else "invalid schedule: "
        super().__init__(f"{where}{reason} in {self.preview(spec)}")

    @staticmethod
    def preview(value: object, limit: int = 80) -> str:
        """repr(value) cut to `limit` characters, built from a bounded part of it; never raises."""
        try:
            text = _preview(value, limit, _PREVIEW_DEPTH)
        except Exception:  # a repr that raises (RecursionError included) must not hide the error
            text = f"<{type(value).__name__}>"
        return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


_PREVIEW_ITEMS = 4  # items shown per container; the rest is "..."
_PREVIEW_DEPTH = 3  # containers nested deeper show as "..."
_PREVIEW_BITS = 100  # ints wider (about 30 digits) show their size: str() refuses > 4300 digits
_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"), frozenset: ("frozenset({", "})")}


def _preview(value: object, limit: int, depth: int) -> str:
    """Like repr, but strings are sliced and containers cut before any work is done on them."""
    if isinstance(value, (str, bytes, bytearray)):
        return repr(value[: limit + 1])  # one more than fits, so the caller's cut shows "..."
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _PREVIEW_BITS:
        return f"<int of about {int(value.bit_length() * 0.30103) + 1} digits>"
    if isinstance(value, Mapping):
        pairs = islice(value.items(), _PREVIEW_ITEMS if depth > 0 else 0)
        shown = [f"{_preview(k, limit, depth - 1)}: {_preview(v, limit, depth - 1)}" for k, v in pairs]
        return "{" + _joined(shown, len(value)) + "}"
    for kind, (opening, closing) in _BRACKETS.items():
        if isinstance(value, kind):
            if not value:
                return repr(value)  # set() and frozenset() have no brackets
            items = islice(value, _PREVIEW_ITEMS if depth > 0 else 0)
            shown = [_preview(item, limit, depth - 1) for item in items]
            comma = "," if kind is tuple and len(value) == 1 else ""
            return opening + _joined(shown, len(value)) + comma + closing
    return repr(value)


def _joined(shown: list[str], size: int) -> str:
    return ", ".join(shown + ["..."]) if size > len(shown) else ", ".join(shown)


class IllegalTransition(PikoError):
    """A state machine was asked for a move its transition table does not allow (a bug in piko)."""


class RegistrationError(ConfigError):
    """A job cannot be registered (not async, duplicate id, bad option)."""


class UnknownJobError(PikoError, LookupError):
    """A job id that no code registered."""


class StoreError(PikoError):
    """The store failed in a way the caller cannot fix by retrying at once."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (wrong address, server down, bad credentials)."""


class StoreNotWritable(StoreUnavailable):
    """The store's file cannot be opened for writing (permissions, a read-only file system); reading may work."""


class LeaseLost(PikoError):
    """This instance's leader term ended; its fenced writes are refused."""


class JobTimeout(PikoError, TimeoutError):
    """A job ran longer than its timeout and was cancelled."""


class WriterFull(PikoError):
    """enqueue_nowait found the persistence queue full."""


class OffloadError(PikoError):
    """A call sent to the CPU pool could not complete (unpicklable, worker died, timeout)."""


class WriterClosed(PikoError, RuntimeError):
    """The persistence writer is not running (before start() or after stop())."""


class UnknownSink(PikoError, LookupError):
    """A write intent names a sink nobody registered."""
