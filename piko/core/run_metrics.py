"""The runner's metric series: per job, looked up once instead of once per run.

At 10,000 runs a second a labels() lookup (key building, dict probes) per metric per run is
measurable, so each job's children are kept (and looked up again after remove_series). Also
counts, per job, the runs whose handler is running now (what max_instances reasons report).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from piko.core.pieces import handler_of
from piko.core.types import RunStatus


class JobMetrics:
    """One job's series."""

    def __init__(self, metrics: Any, job_id: str) -> None:
        self._metrics = metrics
        self._job_id = job_id
        self.epoch = metrics.registry.series_epoch  # stale once remove_series dropped series
        self.duration = metrics.job_duration_seconds.labels(job_id=job_id)
        self.lateness = metrics.job_lateness_seconds.labels(job_id=job_id)
        self.running = metrics.jobs_running.labels(job_id=job_id)
        self._by_status: dict[RunStatus, Any] = {}

    def count(self, status: RunStatus) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._metrics.job_run_total.labels(job_id=self._job_id,
                                                                                 status=status.value)
        child.inc()


class RunMetrics:
    """What the runner reports; `metrics` None (no metric set) reports nothing but still counts."""

    def __init__(self, metrics: Any) -> None:
        self._metrics = metrics
        self._jobs: dict[str, JobMetrics] = {}
        self.in_handler: Counter[str] = Counter()

    def _for(self, job_id: str) -> JobMetrics | None:
        if self._metrics is None:
            return None
        if "[" in job_id:  # a piece (core/pieces.py) reports as its job or task: one series, not one per piece
            job_id = handler_of(job_id)
        found = self._jobs.get(job_id)
        if found is None or found.epoch != self._metrics.registry.series_epoch:
            found = self._jobs[job_id] = JobMetrics(self._metrics, job_id)
        return found

    def count(self, job_id: str, status: RunStatus) -> None:
        m = self._for(job_id)
        if m is not None:
            m.count(status)

    def duration(self, job_id: str, seconds: float) -> None:
        m = self._for(job_id)
        if m is not None:
            m.duration.observe(seconds)

    def lateness(self, job_id: str, late: timedelta) -> None:
        m = self._for(job_id)
        if m is not None:
            m.lateness.observe(max(0.0, late.total_seconds()))

    def pending_records(self, size: int) -> None:
        if self._metrics is not None:
            self._metrics.run_records_pending.set(size)

    def lost_records(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.run_records_lost_total.inc(count)

    def refused_result(self) -> None:
        if self._metrics is not None:
            self._metrics.run_results_refused_total.inc()

    def piece(self, job_id: str, kind: str, status: RunStatus) -> None:
        if self._metrics is not None:
            self._metrics.pieces_total.labels(job_id=job_id, kind=kind, status=status.value).inc()

    def running(self, job_id: str, delta: int) -> None:
        if "[" in job_id:
            job_id = handler_of(job_id)
        self.in_handler[job_id] += delta
        m = self._for(job_id)
        if m is not None:
            m.running.inc(delta)
