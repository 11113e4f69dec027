"""Metrics registry: counters, gauges and histograms, rendered as Prometheus text 0.0.4.

Pure: no asyncio, no I/O, no locks. The registry lives on the event loop thread; worker
threads and processes never touch it. Rendering is on the scrape path with up to tens of
thousands of series, so each child (series.py) caches its formatted sample text and only
re-formats after its value changed; `render_chunks` hands out small pieces so an async
caller can yield to the loop between them. The `piko_` and `process_` name prefixes
belong to piko's own metric set, which registers lazily: a user metric there would only
clash at start-up, so it is refused at registration. Imports nothing from piko but
observability modules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from piko.observability.exposition import (  # noqa: F401  (re-exported: part of this module's API)
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    escape_help,
    escape_label_value,
    format_labels,
    format_value,
)
from piko.observability.exposition import (
    INF as _INF,
)
from piko.observability.exposition import (
    LABEL_NAME as _LABEL_NAME,
)
from piko.observability.exposition import (
    METRIC_NAME as _METRIC_NAME,
)
from piko.observability.series import CounterChild, GaugeChild, HistogramChild

log = logging.getLogger("piko.metrics")

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "RENDER_LINES", "RESERVED_PREFIXES", "Collector", "Counter",
           "CounterChild", "Family", "Gauge", "GaugeChild", "Histogram", "HistogramChild", "MetricsRegistry",
           "Sample", "escape_help", "escape_label_value", "format_labels", "format_value"]

RESERVED_PREFIXES = ("piko_", "process_")  # piko's own metric set (piko_metrics.py, process.py)
# Sample lines per render_chunks piece: a first render formats a line in ~2 us, so a piece of
# 512 lines (30 histogram series or 512 counters) holds the loop about 1 ms; cached, far less.
RENDER_LINES = 512

C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


# -- metrics: a family of children sharing name, help and label names ---------------------


class _Metric(Generic[C]):
    kind = ""
    lines_per_series = 1

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not isinstance(documentation, str):
            raise ValueError(f"metric {name} needs a documentation string (its # HELP text),"
                             f" got {documentation!r}")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        self._header = f"# HELP {name} {escape_help(documentation)}\n# TYPE {name} {self.kind}\n"
        self._default: C | None = None if self.labelnames else self.labels()

    def sample_names(self) -> tuple[str, ...]:
        """Every name this metric owns: its family name and the names of its samples."""
        return (self.name,)

    def labels(self, *values: object, **by_name: object) -> C:
        """The child for these label values (created on first use)."""
        key = self._key(values, by_name)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child(key)
        return child

    def remove(self, *values: object, **by_name: object) -> bool:
        """Drop one series; True if it existed."""
        return self._children.pop(self._key(values, by_name), None) is not None

    def remove_matching(self, label: str, value: str) -> int:
        """Drop every series whose `label` equals `value` (e.g. job_id on deletion)."""
        if label not in self.labelnames:
            return 0
        i = self.labelnames.index(label)
        doomed = [k for k in self._children if k[i] == value]
        for key in doomed:
            del self._children[key]
        return len(doomed)

    def clear(self) -> None:
        self._children.clear()
        if self._default is not None:
            self._default = self.labels()

    def render(self) -> str:
        return "".join(self.render_chunks())

    def render_chunks(self, lines: int = RENDER_LINES) -> Iterator[str]:
        """HELP/TYPE and the samples of as many series as fit in about `lines` lines per chunk."""
        children = list(self._children.values())  # a snapshot: series may come and go meanwhile
        if not children:
            yield self._header
        batch = max(1, lines // self.lines_per_series)
        for start in range(0, len(children), batch):
            part = "".join([c._render() for c in children[start : start + batch]])
            yield self._header + part if start == 0 else part

    def _key(self, values: tuple[object, ...], by_name: dict[str, object]) -> tuple[str, ...]:
        if by_name:
            if values or set(by_name) != set(self.labelnames):
                raise ValueError(
                    f"{self.name} takes labels {list(self.labelnames)}, got {sorted(by_name)}"
                    + (f" and positional {list(values)}" if values else "")
                )
            return tuple(str(by_name[n]) for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} takes {len(self.labelnames)} label values {list(self.labelnames)},"
                f" got {len(values)}"
            )
        return tuple(str(v) for v in values)

    def _new_child(self, key: tuple[str, ...]) -> C:
        raise NotImplementedError

    def _unlabelled(self) -> C:
        if self._default is None:
            raise ValueError(f"{self.name} has labels {list(self.labelnames)}: call .labels(...) first")
        return self._default


class Counter(_Metric[CounterChild]):
    """Goes only up. The name is used exactly as given (end it in `_total`)."""

    kind = "counter"

    def _new_child(self, key: tuple[str, ...]) -> CounterChild:
        return CounterChild(self.name, format_labels(self.labelnames, key))

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    @property
    def value(self) -> float:
        return self._unlabelled().value


class Gauge(_Metric[GaugeChild]):
    kind = "gauge"

    def _new_child(self, key: tuple[str, ...]) -> GaugeChild:
        return GaugeChild(self.name, format_labels(self.labelnames, key))

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._unlabelled().dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    @property
    def value(self) -> float:
        return self._unlabelled().value


class Histogram(_Metric[HistogramChild]):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.bounds = _check_buckets(name, buckets)
        self.les = tuple(format_value(b) for b in self.bounds)  # the le="..." texts, shared by children
        self.lines_per_series = len(self.bounds) + 2  # buckets, _sum, _count
        super().__init__(name, documentation, labelnames)

    def sample_names(self) -> tuple[str, ...]:
        return (self.name, f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")

    def _new_child(self, key: tuple[str, ...]) -> HistogramChild:
        return HistogramChild(self.name, self.labelnames, key, self.bounds, self.les)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)


def _check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = [float(b) for b in buckets]
    if not bounds or any(math.isnan(b) for b in bounds):
        raise ValueError(f"histogram {name} needs at least one numeric bucket, got {list(buckets)}")
    if any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"histogram {name} buckets must be strictly increasing, got {list(buckets)}")
    if bounds[-1] != _INF:
        bounds.append(_INF)
    return tuple(bounds)


# -- collectors: families computed at render time (process_* metrics) ---------------------


@dataclass(frozen=True)
class Sample:
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    suffix: str = ""


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "counter" | "gauge"
    documentation: str
    samples: list[Sample]

    def render(self) -> str:
        lines = [f"# HELP {self.name} {escape_help(self.documentation)}\n# TYPE {self.name} {self.kind}\n"]
        for s in self.samples:
            labels = format_labels(tuple(s.labels), tuple(s.labels.values()))
            lines.append(f"{self.name}{s.suffix}{labels} {format_value(s.value)}\n")
        return "".join(lines)


Collector = Callable[[], Iterable[Family]]
M = TypeVar("M", Counter, Gauge, Histogram)


# -- the registry -------------------------------------------------------------------------------


class MetricsRegistry:
    """Owns metric names; renders every metric and collector in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Collector] = []
        self._taken: dict[str, str] = {}  # sample name -> owning metric or collector name
        self.series_epoch = 0  # bumped by remove_series

    # `is_builtin=True` is for piko's own metric set only: it may use the reserved prefixes.

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                is_builtin: bool = False) -> Counter:
        return self._add(Counter(name, documentation, self._check(name, labelnames, is_builtin)))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
              is_builtin: bool = False) -> Gauge:
        return self._add(Gauge(name, documentation, self._check(name, labelnames, is_builtin)))

    def histogram(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS, *, is_builtin: bool = False) -> Histogram:
        names = self._check(name, labelnames, is_builtin)
        if "le" in names:
            raise ValueError(f"histogram {name} cannot use the label name 'le' (it is reserved)")
        return self._add(Histogram(name, documentation, names, buckets))

    def register_collector(self, names: Sequence[str], collect: Collector, *,
                           is_builtin: bool = False) -> None:
        """Add families computed at each render; `names` reserves their sample names."""
        for name in names:
            self._check(name, (), is_builtin)
            self._claim(name, name, dry_run=True)
        for name in names:
            self._claim(name, name)
        self._collectors.append(collect)

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def unregister(self, name: str) -> None:
        metric = self._metrics.pop(name)
        for sample in metric.sample_names():
            del self._taken[sample]

    def remove_series(self, **match: str) -> int:
        """Drop, in every metric, the series whose labels match (e.g. job_id="a")."""
        if len(match) != 1:
            raise ValueError(f"remove_series takes exactly one label=value, got {sorted(match)}")
        ((label, value),) = match.items()
        self.series_epoch += 1  # callers that cache series children look them up again
        return sum(m.remove_matching(label, value) for m in self._metrics.values())

    def render_chunks(self, lines: int = RENDER_LINES) -> Iterator[str]:
        """The exposition text in pieces of about `lines` sample lines (at least one series):
        an async caller yields to the loop between pieces, so 10,000 jobs' series never block
        it for long."""
        for metric in list(self._metrics.values()):
            yield from metric.render_chunks(lines)
        for collect in self._collectors:
            try:
                text = "".join(f.render() for f in collect())
            except Exception:  # one broken collector costs its own families, not the scrape
                log.exception("metrics collector %r failed; its families are left out of this scrape", collect)
                continue
            yield text

    def render(self) -> str:
        return "".join(self.render_chunks())

    def _check(self, name: str, labelnames: Sequence[str], is_builtin: bool) -> tuple[str, ...]:
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}: use letters, digits, '_' and ':'")
        if not is_builtin and name.startswith(RESERVED_PREFIXES):
            raise ValueError(f"metric name {name!r} uses a prefix reserved for piko's own metrics"
                             f" ({', '.join(RESERVED_PREFIXES)}): name it after your app, e.g. 'myapp_...'")
        names = (labelnames,) if isinstance(labelnames, str) else tuple(labelnames)
        for label in names:
            if not isinstance(label, str) or not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(
                    f"invalid label name {label!r} on {name}: use letters, digits and '_',"
                    " not starting with '__'"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate label names on {name}: {list(names)}")
        return names

    def _add(self, metric: M) -> M:
        for sample in metric.sample_names():
            self._claim(sample, metric.name, dry_run=True)
        for sample in metric.sample_names():
            self._claim(sample, metric.name)
        self._metrics[metric.name] = metric
        return metric

    def _claim(self, sample: str, owner: str, dry_run: bool = False) -> None:
        if sample in self._taken:
            raise ValueError(
                f"duplicate metric name {sample!r}: already registered by {self._taken[sample]!r}"
            )
        if not dry_run:
            self._taken[sample] = owner
