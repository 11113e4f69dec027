"""The PikoError hierarchy: every error piko raises on purpose is one of these.

Rules: messages say what was wrong and what would be right; they never contain secrets.
This module imports nothing from piko, so every other module may import it.
"""

from __future__ import annotations


class PikoError(Exception):
    """Base class of every error piko raises deliberately."""


class ConfigError(PikoError, ValueError):
    """A setting, a job registration or a stored row is invalid."""


class TriggerSpecError(ConfigError):
    """A schedule expression cannot be turned into a trigger.

    `spec` is the offending input (shortened), `field` the part that is wrong (or None),
    `reason` what is wrong and what is allowed.
    """

    def __init__(self, spec: object, reason: str, field: str | None = None) -> None:
        self.spec = spec
        self.field = field
        self.reason = reason
        shown = repr(spec)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = f"invalid {field}: " if field else "invalid schedule: "
        super().__init__(f"{where}{reason} in {shown}")


class RegistrationError(ConfigError):
    """A job cannot be registered (not async, duplicate id, bad option)."""


class UnknownJobError(PikoError, LookupError):
    """A job id that no code registered."""


class StoreError(PikoError):
    """The store failed in a way the caller cannot fix by retrying at once."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (wrong address, server down, bad credentials)."""


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
