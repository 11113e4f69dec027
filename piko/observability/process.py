"""How this process is doing: the standard process_* metrics and the event loop's lag.

process_* families are read from /proc at scrape time (Linux; elsewhere they are absent,
as in prometheus_client). LoopLagMonitor ticks on the loop every `interval_s` and records
how late each tick ran: the number /healthz reports and that shows a blocked loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from piko.observability.metrics import Family, MetricsRegistry, Sample

PROCESS_METRIC_NAMES = (
    "process_cpu_seconds_total",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
)


class ProcessCollector:
    """Reads /proc/<pid>/{stat,fd,limits}; yields nothing where /proc is missing."""

    def __init__(self, proc_root: str = "/proc", pid: int | str = "self") -> None:
        self._dir = Path(proc_root) / str(pid)
        self._boot_time_s = _boot_time_s(Path(proc_root) / "stat")
        try:
            self._ticks = os.sysconf("SC_CLK_TCK")
            self._page_size = os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            self._ticks, self._page_size = 100, 4096

    def register(self, registry: MetricsRegistry) -> None:
        registry.register_collector(PROCESS_METRIC_NAMES, self.collect, is_builtin=True)

    def collect(self) -> list[Family]:
        try:
            stat = (self._dir / "stat").read_text()
        except OSError:
            return []
        # the command name (field 2) may hold spaces: split after its closing parenthesis
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])
        families = [
            _family("process_cpu_seconds_total", "counter",
                    "Total user and system CPU time spent in seconds.", (utime + stime) / self._ticks),
            _family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                    int(fields[20])),
            _family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                    int(fields[21]) * self._page_size),
        ]
        if self._boot_time_s is not None:
            started = self._boot_time_s + int(fields[19]) / self._ticks
            families.append(_family("process_start_time_seconds", "gauge",
                                    "Start time of the process since unix epoch in seconds.", started))
        families.extend(self._fd_families())
        return families

    def _fd_families(self) -> list[Family]:
        out = []
        try:
            open_fds = len(os.listdir(self._dir / "fd"))
            out.append(_family("process_open_fds", "gauge", "Number of open file descriptors.", open_fds))
        except OSError:
            pass
        max_fds = _max_open_files(self._dir / "limits")
        if max_fds is not None:
            out.append(_family("process_max_fds", "gauge",
                               "Maximum number of open file descriptors.", max_fds))
        return out


def _family(name: str, kind: str, documentation: str, value: float) -> Family:
    return Family(name, kind, documentation, [Sample(value)])


def _boot_time_s(path: Path) -> float | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _max_open_files(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(soft)
    except (OSError, IndexError, ValueError):
        pass
    return None


class LoopLagMonitor:
    """Measures how late a periodic loop.call_at callback runs: the loop's lag.

    `lag_s` is the latest lag, `max_lag_s` the worst since start. Use as an async context
    manager; `on_sample` (e.g. a gauge's set) receives each measurement.
    """

    def __init__(self, interval_s: float = 0.5, on_sample: Callable[[float], None] | None = None) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self._on_sample = on_sample
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    async def __aenter__(self) -> LoopLagMonitor:
        self._schedule(asyncio.get_running_loop())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self.interval_s
        self._handle = loop.call_at(self._due, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lag_s = max(0.0, loop.time() - self._due)
        self.max_lag_s = max(self.max_lag_s, self.lag_s)
        if self._on_sample is not None:
            self._on_sample(self.lag_s)
        self._schedule(loop)
