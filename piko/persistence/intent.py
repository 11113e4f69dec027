"""WriteIntent: one result a job wants stored, addressed to a sink by name.

A frozen value, checked when built so a bad intent fails in the job that made it, not
later in the writer. Pure: no I/O, no clock. At-least-once delivery means a sink may see
an intent twice; `dedupe_key` is what a sink should deduplicate on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from piko.errors import ConfigError

OP_TYPES = frozenset({"upsert", "insert", "delete"})


@dataclass(frozen=True, slots=True)
class WriteIntent:
    """A payload for sink `sink`, stored under `key`, produced by one run of one job."""

    sink: str
    key: str | int
    payload: Any
    job_id: str | None
    run_id: int | str | None
    scheduled_time: datetime | None
    idempotency_key: str | None = None
    op_type: str = "upsert"

    def __post_init__(self) -> None:
        if not isinstance(self.sink, str) or not self.sink:
            raise ConfigError(f"WriteIntent.sink must be a sink name (non-empty str), got {self.sink!r}")
        if not isinstance(self.key, (str, int)) or isinstance(self.key, bool):
            raise ConfigError(
                f"WriteIntent.key must be a str or int, got {type(self.key).__name__}; use str(...)")
        if self.job_id is not None and not isinstance(self.job_id, str):
            raise ConfigError(f"WriteIntent.job_id must be a str or None, got {type(self.job_id).__name__}")
        if self.run_id is not None and (not isinstance(self.run_id, (str, int)) or isinstance(self.run_id, bool)):
            raise ConfigError(f"WriteIntent.run_id must be an int, a str or None (flush() groups intents "
                              f"by it), got {type(self.run_id).__name__}")
        if self.idempotency_key is not None and not isinstance(self.idempotency_key, str):
            raise ConfigError(f"WriteIntent.idempotency_key must be a str or None, got "
                              f"{type(self.idempotency_key).__name__}")
        if not isinstance(self.op_type, str) or self.op_type not in OP_TYPES:
            raise ConfigError(
                f"WriteIntent.op_type {self.op_type!r} is not one of {', '.join(sorted(OP_TYPES))}")
        if self.scheduled_time is not None and not isinstance(self.scheduled_time, datetime):
            raise ConfigError(
                f"WriteIntent.scheduled_time must be a datetime or None, got {self.scheduled_time!r}")

    @property
    def dedupe_key(self) -> str:
        """The idempotency key, or one derived from sink, job, run and key when none was given."""
        if self.idempotency_key is not None:
            return self.idempotency_key
        return f"{self.sink}/{self.job_id}/{self.run_id}/{self.key}"
