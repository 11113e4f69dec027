"""process_* metrics from /proc and the event loop lag monitor."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from piko.observability.metrics import MetricsRegistry
from piko.observability.process import LoopLagMonitor, ProcessCollector

STAT = ("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 4 0 "
        "500 123456789 3000 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")


def fake_proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    (proc / "4242" / "fd").mkdir(parents=True)
    for fd in range(3):
        (proc / "4242" / "fd" / str(fd)).touch()
    (proc / "4242" / "stat").write_text(STAT)
    (proc / "4242" / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max open files            1024                 4096                 files\n")
    (proc / "stat").write_text("cpu  1 2 3\nbtime 1700000000\n")
    return proc


def test_process_metrics_are_read_from_proc(tmp_path: Path) -> None:
    collector = ProcessCollector(str(fake_proc(tmp_path)), 4242)
    collector._ticks, collector._page_size = 100, 4096
    values = {f.name: f.samples[0].value for f in collector.collect()}
    assert values == {
        "process_cpu_seconds_total": 4.0,
        "process_virtual_memory_bytes": 123456789,
        "process_resident_memory_bytes": 3000 * 4096,
        "process_start_time_seconds": 1700000005.0,
        "process_open_fds": 3,
        "process_max_fds": 1024,
    }


def test_without_proc_there_are_no_process_metrics(tmp_path: Path) -> None:
    reg = MetricsRegistry()
    ProcessCollector(str(tmp_path / "missing")).register(reg)
    assert reg.render() == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_this_process_reports_real_values() -> None:
    reg = MetricsRegistry()
    ProcessCollector().register(reg)
    text = reg.render()
    assert "# TYPE process_cpu_seconds_total counter" in text
    start = next(line for line in text.splitlines() if line.startswith("process_start_time_seconds "))
    assert abs(float(start.split()[1]) - time.time()) < 24 * 3600 * 365


def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    async def scenario() -> LoopLagMonitor:
        samples: list[float] = []
        async with LoopLagMonitor(interval_s=0.02, on_sample=samples.append) as monitor:
            await asyncio.sleep(0.05)
            time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop on purpose
            await asyncio.sleep(0.03)
        assert samples and max(samples) == monitor.max_lag_s
        return monitor

    monitor = asyncio.run(scenario())
    assert monitor.max_lag_s >= 0.05
