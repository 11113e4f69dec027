"""Fixtures for the write path: recording sinks, a writer factory, async tests without a plugin."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from piko.observability.metrics import MetricsRegistry
from piko.observability.piko_metrics import PikoMetrics
from piko.persistence.intent import WriteIntent
from piko.persistence.sink_base import ResultSink
from piko.persistence.writer import PersistenceWriter

UTC = timezone.utc
SCHEDULED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True


def intent(key: object, sink: str = "rec", payload: Any = None, run_id: int | str | None = 1) -> WriteIntent:
    return WriteIntent(sink=sink, key=str(key), payload={"n": key} if payload is None else payload,
                       job_id="job", run_id=run_id, scheduled_time=SCHEDULED_AT)


def bodies(n: int, start: int = 0, sink: str = "rec") -> list[bytes]:
    """Spill record bodies of intents start..start+n-1."""
    from piko.persistence.records import intent_body

    return [intent_body(intent(i, sink=sink)) for i in range(start, start + n)]


@pytest.fixture
def spill_dir(tmp_path: Path) -> Any:
    from piko.clock import SystemClock
    from piko.persistence import spill

    d = spill.SpillDir(tmp_path / "spill", SystemClock())
    d.open()
    yield d
    d.close()


class RecordingSink(ResultSink):
    """Remembers every key it took; can be down, slow, hanging, or refuse poison keys."""

    def __init__(self, name: str = "rec", *, poison: set[str] | None = None, delay_s: float = 0.0) -> None:
        super().__init__(name)
        self.keys: list[str] = []
        self.batches: list[int] = []
        self.is_down = False
        self.hang_until: asyncio.Event | None = None
        self.poison = poison or set()
        self.delay_s = delay_s
        self.calls = 0

    async def write_batch(self, batch: list[WriteIntent]) -> None:
        self.calls += 1
        if self.hang_until is not None:
            await self.hang_until.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.is_down:
            raise ConnectionError(f"{self.name} is down")
        bad = [i.key for i in batch if i.key in self.poison]
        if bad:
            raise ValueError(f"cannot store {bad[0]}")
        self.keys.extend(str(i.key) for i in batch)
        self.batches.append(len(batch))


@pytest.fixture
def metrics() -> PikoMetrics:
    return PikoMetrics(MetricsRegistry(), include_process=False)


@pytest.fixture
def make_writer(tmp_path: Path, metrics: PikoMetrics) -> Callable[..., PersistenceWriter]:
    """A writer with test-speed timings on a fresh spill directory."""

    def make(**overrides: Any) -> PersistenceWriter:
        options: dict[str, Any] = dict(
            spill_dir=tmp_path / "spill", batch_size=50, batch_timeout_s=0.01, retry_max=2,
            retry_base_s=0.005, retry_cap_s=0.02, replay_interval_s=0.05, metrics=metrics,
            write_timeout_s=2.0, stall_s=0.2)
        options.update(overrides)
        return PersistenceWriter(**options)

    return make


def counter(metric: Any, **labels: str) -> float:
    child = metric.labels(**labels) if labels else metric
    return float(child.value)
