"""What the registry refuses or repairs so that one bad call can never break a scrape."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piko.observability.metrics import RENDER_LINES, MetricsRegistry
from piko.observability.piko_metrics import PikoMetrics
from piko.observability.process import ProcessCollector


def test_a_label_value_with_lone_surrogates_renders_as_utf8_that_parses() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    reg = MetricsRegistry()
    files = reg.counter("files_total", "files", ("name",))
    files.labels(name=os.fsdecode(b"bad\xff.csv")).inc()
    text = reg.render()
    text.encode("utf-8")  # strict: raises if a surrogate got through
    (family,) = parser.text_string_to_metric_families(text)
    assert family.samples[0].labels == {"name": "bad\\udcff.csv"}
    assert files.remove(os.fsdecode(b"bad\xff.csv")) is True  # the series keeps its real key


def test_help_text_with_lone_surrogates_renders_as_utf8() -> None:
    reg = MetricsRegistry()
    reg.gauge("g", "from " + os.fsdecode(b"\xfe"))
    reg.render().encode("utf-8")


@given(st.text(st.one_of(st.characters(), st.characters(categories=("Cs",))), max_size=30))
def test_any_label_value_renders_as_valid_utf8(label: str) -> None:
    reg = MetricsRegistry()
    reg.gauge("g", "g", ("v",)).labels(v=label).set(1)
    reg.render().encode("utf-8")


@pytest.mark.parametrize("name", ["x_total\n", "x\n", "a\nb"])
def test_metric_names_with_a_newline_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        MetricsRegistry().counter(name, "x")


@pytest.mark.parametrize("label", ["job\n", "__name__", "__x"])
def test_label_names_with_a_newline_or_a_double_underscore_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="invalid label name"):
        MetricsRegistry().gauge("g", "g", (label,))


def test_documentation_none_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="needs a documentation string"):
        MetricsRegistry().counter("x_total", None)  # type: ignore[arg-type]


def test_counter_refuses_nan() -> None:
    counter = MetricsRegistry().counter("x_total", "x")
    with pytest.raises(ValueError, match="counters only go up"):
        counter.inc(math.nan)
    counter.inc(math.inf)  # infinity is a number: prometheus_client takes it too
    assert counter.value == math.inf


def test_histogram_refuses_nan_and_records_nothing() -> None:
    reg = MetricsRegistry()
    histogram = reg.histogram("h", "h", buckets=(1.0,))
    with pytest.raises(ValueError, match="cannot observe NaN"):
        histogram.observe(math.nan)
    assert reg.render() == ('# HELP h h\n# TYPE h histogram\nh_bucket{le="1.0"} 0\nh_bucket{le="+Inf"} 0\n'
                            "h_sum 0\nh_count 0\n")


@pytest.mark.parametrize("name", ["piko_jobs_running", "piko_anything", "process_cpu_seconds_total"])
def test_user_metrics_with_a_reserved_prefix_are_refused_at_registration(name: str) -> None:
    with pytest.raises(ValueError, match="reserved for piko's own metrics"):
        MetricsRegistry().gauge(name, "mine")


def test_a_user_collector_with_a_reserved_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        MetricsRegistry().register_collector(["process_things"], list)


def test_piko_metrics_register_after_user_metrics_without_a_clash() -> None:
    reg = MetricsRegistry()
    reg.counter("myapp_rows_total", "rows")
    PikoMetrics(reg)  # created lazily at start(), after the user's import-time metrics
    assert reg.get("piko_jobs_running") is not None and "process_cpu_seconds_total" in reg.render()


def test_the_process_collector_is_builtin() -> None:
    reg = MetricsRegistry()
    ProcessCollector().register(reg)
    with pytest.raises(ValueError, match="duplicate"):
        ProcessCollector().register(reg)


def test_render_chunks_hold_about_the_default_number_of_lines_whatever_the_metric_kind() -> None:
    reg = MetricsRegistry()
    histogram = reg.histogram("h", "h", ("i",), buckets=(1.0,))  # 4 lines per series
    counter = reg.counter("c_total", "c", ("i",))
    for i in range(2000):
        histogram.labels(str(i)).observe(i)
        counter.labels(str(i)).inc()
    chunks = list(reg.render_chunks())
    assert RENDER_LINES <= 1000  # a cold piece stays around a millisecond
    assert max(c.count("\n") for c in chunks) <= RENDER_LINES + 2  # + HELP and TYPE
    assert max(c.count("_count{") for c in chunks) == RENDER_LINES // 4
    assert max(c.count("c_total{") for c in chunks) == RENDER_LINES
    assert "".join(chunks) == reg.render()


def test_a_series_longer_than_the_line_budget_still_renders_one_per_chunk() -> None:
    reg = MetricsRegistry()
    histogram = reg.histogram("h", "h", ("i",), buckets=tuple(range(1, 20)))
    for i in range(3):
        histogram.labels(str(i)).observe(i)
    assert len(list(reg.render_chunks(lines=5))) == 3
