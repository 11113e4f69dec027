"""The standard piko metric set keeps the names existing dashboards use."""

from __future__ import annotations

import pytest

from piko.observability.metrics import MetricsRegistry
from piko.observability.piko_metrics import PikoMetrics

DASHBOARD_NAMES = {
    "piko_job_run_total": ("counter", ("job_id", "status")),
    "piko_job_duration_seconds": ("histogram", ("job_id",)),
    "piko_leader_status": ("gauge", ("host",)),
    "piko_persistence_queue_size": ("gauge", ()),
    "piko_persistence_sink_failure_total": ("counter", ("sink",)),
    "piko_persistence_fallback_total": ("counter", ()),
    "piko_persistence_recovery_total": ("counter", ()),
    "piko_persistence_recovery_failure_total": ("counter", ()),
    "piko_config_reconcile_total": ("counter", ("result",)),
    "piko_job_lateness_seconds": ("histogram", ("job_id",)),
    "piko_jobs_running": ("gauge", ("job_id",)),
    "piko_build_info": ("gauge", ("version",)),
}


def test_dashboard_metric_names_types_and_labels_are_unchanged() -> None:
    reg = MetricsRegistry()
    PikoMetrics(reg, include_process=False)
    for name, (kind, labels) in DASHBOARD_NAMES.items():
        metric = reg.get(name)
        assert metric is not None, name
        assert (metric.kind, metric.labelnames) == (kind, labels), name


def test_build_info_is_one_with_the_version_label() -> None:
    reg = MetricsRegistry()
    PikoMetrics(reg, include_process=False, version="9.9.9")
    assert 'piko_build_info{version="9.9.9"} 1\n' in reg.render()


def test_users_add_their_own_metrics_next_to_piko_ones() -> None:
    reg = MetricsRegistry()
    PikoMetrics(reg)
    rows = reg.counter("myapp_rows_synced_total", "Rows synced", ("table",))
    rows.labels(table="users").inc(10)
    assert 'myapp_rows_synced_total{table="users"} 10\n' in reg.render()
    with pytest.raises(ValueError, match="reserved for piko's own metrics"):
        reg.counter("piko_job_run_total", "taken")


def test_forget_job_drops_all_of_its_series() -> None:
    reg = MetricsRegistry()
    metrics = PikoMetrics(reg, include_process=False)
    metrics.job_run_total.labels(job_id="gone", status="SUCCESS").inc()
    metrics.job_duration_seconds.labels(job_id="gone").observe(1)
    metrics.jobs_running.labels(job_id="gone").set(0)
    metrics.job_run_total.labels(job_id="kept", status="SUCCESS").inc()
    assert metrics.forget_job("gone") == 3
    text = reg.render()
    assert '"gone"' not in text and '"kept"' in text


def test_whole_set_parses_with_prometheus_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    reg = MetricsRegistry()
    metrics = PikoMetrics(reg)
    metrics.job_lateness_seconds.labels(job_id="a").observe(0.002)
    metrics.leader_status.labels(host="h1").set(1)
    names = {f.name for f in parser.text_string_to_metric_families(reg.render())}
    assert {"piko_job_lateness_seconds", "piko_leader_status", "process_resident_memory_bytes"} <= names
