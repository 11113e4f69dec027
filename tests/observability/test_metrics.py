"""The metrics registry and its Prometheus text rendering (pure: no loop, no sockets)."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piko.observability.metrics import Family, MetricsRegistry, Sample, format_value


def test_counter_renders_help_type_and_labelled_samples() -> None:
    reg = MetricsRegistry()
    runs = reg.counter("app_job_run_total", "Runs by final status", labelnames=("job_id", "status"))
    runs.labels(job_id="a", status="SUCCESS").inc()
    runs.labels("a", "FAILED").inc(2.5)
    assert reg.render() == (
        "# HELP app_job_run_total Runs by final status\n"
        "# TYPE app_job_run_total counter\n"
        'app_job_run_total{job_id="a",status="SUCCESS"} 1\n'
        'app_job_run_total{job_id="a",status="FAILED"} 2.5\n'
    )


def test_counter_name_is_kept_exactly_and_unlabelled_counters_start_at_zero() -> None:
    reg = MetricsRegistry()
    fallback = reg.counter("app_fallback_total", "Spilled intents")
    assert reg.render().endswith("app_fallback_total 0\n")
    fallback.inc()
    assert fallback.value == 1
    assert "_total_total" not in reg.render()


def test_counter_refuses_to_go_down() -> None:
    counter = MetricsRegistry().counter("x_total", "x")
    with pytest.raises(ValueError, match="counters only go up"):
        counter.inc(-1)


def test_gauge_goes_up_down_and_is_set() -> None:
    reg = MetricsRegistry()
    running = reg.gauge("app_jobs_running", "Runs in progress", labelnames=("job_id",))
    child = running.labels(job_id="a")
    child.inc()
    child.inc()
    child.dec()
    assert child.value == 1
    child.set(3)
    assert 'app_jobs_running{job_id="a"} 3\n' in reg.render()


@pytest.mark.parametrize("bad", [None, "abc", "1.5", b"1", [1], object()])
def test_a_non_number_is_refused_where_it_is_set_and_the_scrape_stays_whole(bad: object) -> None:
    reg = MetricsRegistry()
    gauge = reg.gauge("app_rows", "rows")
    counter = reg.counter("app_done_total", "done")
    histogram = reg.histogram("app_seconds", "s", buckets=(1.0,))
    for call, name in ((gauge.set, "set"), (gauge.inc, "inc"), (gauge.dec, "dec"),
                       (counter.inc, "inc"), (histogram.observe, "observe")):
        with pytest.raises(TypeError, match=rf"{name}\(\) on app_\w+ needs a number, got"):
            call(bad)  # type: ignore[arg-type]
    assert "app_rows 0\n" in reg.render() and "app_seconds_count 0\n" in reg.render()


def test_bools_decimals_and_huge_ints_become_float64_sample_values() -> None:
    from decimal import Decimal

    reg = MetricsRegistry()
    gauge = reg.gauge("app_v", "v")
    gauge.set(True)
    assert reg.render().endswith("app_v 1\n")
    gauge.set(Decimal("2.5"))
    assert reg.render().endswith("app_v 2.5\n")
    gauge.set(10**30)
    assert reg.render().endswith("app_v 1e+30\n")
    with pytest.raises(ValueError, match="too large for a sample value"):
        gauge.set(10**400)
    assert format_value(10**400) == "+Inf" and format_value(-(10**400)) == "-Inf"


def test_a_collector_that_raises_leaves_out_only_its_own_families() -> None:
    reg = MetricsRegistry()
    reg.gauge("app_ok", "ok").set(1)

    def broken() -> list[Family]:
        raise RuntimeError("boom")

    reg.register_collector(["app_broken"], broken)
    reg.register_collector(["app_fine"], lambda: [Family("app_fine", "gauge", "f", [Sample(3)])])
    text = reg.render()
    assert "app_ok 1\n" in text and "app_fine 3\n" in text and "app_broken" not in text


def test_histogram_renders_cumulative_buckets_inf_sum_and_count() -> None:
    reg = MetricsRegistry()
    duration = reg.histogram("d_seconds", "Durations", ("job_id",), buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        duration.labels(job_id="a").observe(value)
    assert reg.render() == (
        "# HELP d_seconds Durations\n# TYPE d_seconds histogram\n"
        'd_seconds_bucket{job_id="a",le="0.1"} 2\n'
        'd_seconds_bucket{job_id="a",le="1.0"} 3\n'
        'd_seconds_bucket{job_id="a",le="+Inf"} 4\n'
        'd_seconds_sum{job_id="a"} 7.65\n'
        'd_seconds_count{job_id="a"} 4\n'
    )


def test_histogram_buckets_must_increase_and_le_is_reserved() -> None:
    reg = MetricsRegistry()
    with pytest.raises(ValueError, match="strictly increasing"):
        reg.histogram("h1", "h", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="'le'"):
        reg.histogram("h2", "h", labelnames=("le",))


def test_duplicate_names_raise_a_clear_value_error() -> None:
    reg = MetricsRegistry()
    reg.histogram("app_job_duration_seconds", "d")
    with pytest.raises(ValueError, match="duplicate metric name 'app_job_duration_seconds'"):
        reg.gauge("app_job_duration_seconds", "again")
    with pytest.raises(ValueError, match="'app_job_duration_seconds_count'.*already registered"):
        reg.counter("app_job_duration_seconds_count", "clashes with a histogram sample")


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é"])
def test_invalid_metric_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        MetricsRegistry().counter(name, "x")


@pytest.mark.parametrize("labels", [("a-b",), ("__reserved",), ("1a",), ("a", "a")])
def test_invalid_or_duplicate_label_names_are_refused(labels: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="label name"):
        MetricsRegistry().counter("x_total", "x", labels)


def test_wrong_label_sets_are_refused() -> None:
    counter = MetricsRegistry().counter("x_total", "x", ("job_id", "status"))
    with pytest.raises(ValueError, match=r"takes labels \['job_id', 'status'\]"):
        counter.labels(job_id="a")
    with pytest.raises(ValueError, match="takes 2 label values"):
        counter.labels("a")
    with pytest.raises(ValueError, match=r"call \.labels"):
        counter.inc()


def test_label_values_and_help_are_escaped() -> None:
    reg = MetricsRegistry()
    gauge = reg.gauge("g", "line one\nback\\slash \"quoted\"", ("v",))
    gauge.labels(v='a\\b"c\nd').set(1)
    assert reg.render() == (
        '# HELP g line one\\nback\\\\slash "quoted"\n# TYPE g gauge\n'
        'g{v="a\\\\b\\"c\\nd"} 1\n'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1"), (2.5, "2.5"), (1.0, "1.0"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
     (1e-7, "1e-07"), (0.1 + 0.2, "0.30000000000000004")],
)
def test_values_are_formatted_the_prometheus_way(value: float, text: str) -> None:
    assert format_value(value) == text


def test_series_can_be_removed_per_child_or_by_label() -> None:
    reg = MetricsRegistry()
    runs = reg.counter("r_total", "r", ("job_id", "status"))
    running = reg.gauge("running", "r", ("job_id",))
    runs.labels("a", "SUCCESS").inc()
    runs.labels("a", "FAILED").inc()
    runs.labels("b", "SUCCESS").inc()
    running.labels("a").set(1)
    assert runs.remove("b", "SUCCESS") is True
    assert reg.remove_series(job_id="a") == 3
    assert "job_id" not in reg.render()


def test_unregister_frees_the_name_for_a_new_metric() -> None:
    reg = MetricsRegistry()
    reg.histogram("h", "h")
    reg.unregister("h")
    reg.gauge("h_count", "now free")
    assert "# TYPE h_count gauge" in reg.render()


def test_collectors_render_after_metrics_and_reserve_their_names() -> None:
    reg = MetricsRegistry()
    reg.register_collector(["up_things"], lambda: [Family("up_things", "gauge", "u", [Sample(2, {"k": "v"})])])
    assert reg.render() == '# HELP up_things u\n# TYPE up_things gauge\nup_things{k="v"} 2\n'
    with pytest.raises(ValueError, match="duplicate"):
        reg.gauge("up_things", "again")


def test_render_reflects_changes_after_a_cached_render() -> None:
    reg = MetricsRegistry()
    counter = reg.counter("c_total", "c", ("k",))
    histogram = reg.histogram("h", "h", ("k",), buckets=(1.0,))
    counter.labels("x").inc()
    histogram.labels("x").observe(0.5)
    reg.render()
    counter.labels("x").inc()
    histogram.labels("x").observe(5)
    text = reg.render()
    assert 'c_total{k="x"} 2\n' in text
    assert 'h_bucket{k="x",le="+Inf"} 2\n' in text and 'h_count{k="x"} 2\n' in text


def test_render_chunks_bound_the_lines_per_chunk() -> None:
    reg = MetricsRegistry()
    gauge = reg.gauge("g", "g", ("i",))
    for i in range(2500):
        gauge.labels(str(i)).set(i)
    chunks = list(reg.render_chunks(lines=1000))
    assert [c.count("\n") for c in chunks] == [1002, 1000, 500]
    assert "".join(chunks) == reg.render()


def test_parsed_by_prometheus_client() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    reg = MetricsRegistry()
    reg.counter("a_total", "A \\ help\nmore", ("x",)).labels(x='q"\\\n').inc(3)
    reg.gauge("b", "B").set(math.nan)
    reg.histogram("c", "C", buckets=(0.5,)).observe(0.25)
    families = {f.name: f for f in parser.text_string_to_metric_families(reg.render())}
    assert families["a"].documentation == "A \\ help\nmore"
    assert families["a"].samples[0].labels == {"x": 'q"\\\n'}
    assert math.isnan(families["b"].samples[0].value)
    assert [(s.name, s.value) for s in families["c"].samples] == [
        ("c_bucket", 1), ("c_bucket", 1), ("c_sum", 0.25), ("c_count", 1)]


@given(st.text(max_size=40), st.floats(allow_nan=False))
def test_any_label_value_and_gauge_value_round_trip_through_the_parser(label: str, value: float) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    reg = MetricsRegistry()
    reg.gauge("g", "g", ("v",)).labels(v=label).set(value)
    (family,) = parser.text_string_to_metric_families(reg.render())
    assert family.samples[0].labels == {"v": label}
    assert family.samples[0].value == value


def test_rendering_ten_thousand_jobs_series_is_fast() -> None:
    reg = MetricsRegistry()
    runs = reg.counter("app_job_run_total", "r", ("job_id", "status"))
    duration = reg.histogram("app_job_duration_seconds", "d", ("job_id",))
    for i in range(10_000):
        runs.labels(f"job-{i}", "SUCCESS").inc()
        duration.labels(f"job-{i}").observe(0.1)
    reg.render()  # first render formats every series
    started = time.perf_counter()
    text = reg.render()
    elapsed = time.perf_counter() - started
    assert text.count("\n") == 4 + 10_000 * (1 + 17)
    assert elapsed < 0.2, f"{elapsed * 1000:.1f} ms"  # ~10 ms on a quiet core; generous for CI
