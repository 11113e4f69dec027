"""The standard piko metric set, registered on one MetricsRegistry.

The names stay drop-in with dashboards built for piko 0.1 (piko_job_run_total{job_id,status},
piko_job_duration_seconds{job_id}, piko_leader_status{host}, piko_persistence_*,
piko_config_reconcile_total{result}); 0.2 adds lateness, running jobs, build info and
process_* metrics. Components receive this object and update the attributes they own.
"""

from __future__ import annotations

import functools

from piko.observability.metrics import MetricsRegistry
from piko.observability.process import ProcessCollector

# Jobs run from milliseconds to hours; lateness is normally milliseconds, seconds when the
# loop or the host was stalled.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0)


class _Builtin:
    """The registry's constructors with is_builtin=True: these names may use the piko_ prefix."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.counter = functools.partial(registry.counter, is_builtin=True)
        self.gauge = functools.partial(registry.gauge, is_builtin=True)
        self.histogram = functools.partial(registry.histogram, is_builtin=True)


class PikoMetrics:
    def __init__(self, registry: MetricsRegistry, *, include_process: bool = True,
                 version: str | None = None) -> None:
        if version is None:
            from piko.version import __version__ as version
        self.registry = registry
        r = _Builtin(registry)
        self.job_run_total = r.counter(
            "piko_job_run_total", "Job runs by final status.", ("job_id", "status"))
        self.job_duration_seconds = r.histogram(
            "piko_job_duration_seconds", "Wall time of finished job runs in seconds.", ("job_id",),
            buckets=DURATION_BUCKETS)
        self.job_lateness_seconds = r.histogram(
            "piko_job_lateness_seconds", "How late a run started after its scheduled time, in seconds.",
            ("job_id",), buckets=LATENESS_BUCKETS)
        self.jobs_running = r.gauge("piko_jobs_running", "Runs in progress.", ("job_id",))
        self.run_records_pending = r.gauge(
            "piko_run_records_pending", "Run ends and watermark moves waiting for the store to take them.")
        self.run_records_lost_total = r.counter(
            "piko_run_records_lost_total", "Run ends and watermark moves given up: still unwritten at exit, "
            "or past the pending limit.")
        self.run_results_refused_total = r.counter(
            "piko_run_results_refused_total", "Run ends the store refused: the run had moved on (ended, or "
            "handed to a new attempt while this instance was silent).")
        self.queue_depth = r.gauge(
            "piko_queue_depth", "Runs queued for any worker (cluster execution), per queue; set by the leader.",
            ("queue",))
        self.run_claim_latency_seconds = r.histogram(
            "piko_run_claim_latency_seconds", "From a run queued to a worker claiming it, in seconds.",
            buckets=LATENESS_BUCKETS)
        self.pieces_total = r.counter(
            "piko_pieces_total", "Pieces of fires (map items, shards, broadcast copies) ended, as their parent saw "
            "them end, per job, kind and status.", ("job_id", "kind", "status"))
        self.runs_claimed_total = r.counter(
            "piko_runs_claimed_total", "Queued runs this instance's worker claimed.", ("instance",))
        self.trigger_errors_total = r.counter(
            "piko_trigger_errors_total", "Schedules whose trigger could not compute a next fire.",
            ("job_id",))
        self.leader_status = r.gauge(
            "piko_leader_status", "1 while this instance holds the leader lease, else 0.", ("host",))
        self.clock_jump_total = r.counter(
            "piko_clock_jump_total", "Wall-clock jumps detected against the monotonic clock.")
        self.config_reconcile_total = r.counter(
            "piko_config_reconcile_total", "Reconcile passes of stored schedules by result.", ("result",))
        self.persistence_queue_size = r.gauge(
            "piko_persistence_queue_size", "Write intents waiting in the persistence queue.")
        self.persistence_written_total = r.counter(
            "piko_persistence_written_total", "Write intents written by sink.", ("sink",))
        self.persistence_retried_total = r.counter(
            "piko_persistence_retried_total", "Batch write retries by sink.", ("sink",))
        self.persistence_sink_failure_total = r.counter(
            "piko_persistence_sink_failure_total", "Batches a sink failed to write.", ("sink",))
        self.persistence_fallback_total = r.counter(
            "piko_persistence_fallback_total", "Write intents spilled to the disk fallback.")
        self.persistence_recovery_total = r.counter(
            "piko_persistence_recovery_total", "Spilled write intents recovered from disk.")
        self.persistence_recovery_failure_total = r.counter(
            "piko_persistence_recovery_failure_total", "Spill records that could not be recovered.")
        self.persistence_lost_total = r.counter(
            "piko_persistence_lost_total", "Accepted write intents lost at shutdown (sink down and disk full).")
        self.build_info = r.gauge("piko_build_info", "Always 1; the label names the piko version.",
                                  ("version",))
        self.build_info.labels(version=version).set(1)
        if include_process:
            ProcessCollector().register(registry)

    def forget_job(self, job_id: str) -> int:
        """Drop every series of a deleted job; returns how many were dropped."""
        return self.registry.remove_series(job_id=job_id)
