"""One series of a metric (one set of label values): its value and its cached sample text.

Pure: no asyncio, no I/O, no locks; children live on the event loop thread. A child
formats its sample lines at the first render after a change and reuses them until the
next change, so a scrape of tens of thousands of unchanged series only joins strings.
NaN is refused where it would corrupt a series for good: a counter that went NaN, or a
histogram whose _sum went NaN, never recovers (prometheus_client would take it silently).
Imports nothing from piko but the exposition rules.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from piko.observability.exposition import format_labels, format_value

_INT_LIMIT = 2**63  # larger ints are kept as floats: Prometheus parses sample values as float64


def number(value: object, where: str) -> float:
    """`value` as a sample value, or TypeError/ValueError naming `where`: a None or a str set
    on a gauge must fail in the job that set it, not in every later scrape."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        if -_INT_LIMIT <= value <= _INT_LIMIT:  # type: ignore[operator]
            return value  # type: ignore[return-value]
    elif kind is bool:
        return int(value)  # type: ignore[call-overload]
    elif isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"{where} needs a number, got {kind.__name__} {value!r:.60}")
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise ValueError(f"{where}: {value!r:.60} is too large for a sample value (float64)") from None


class CounterChild:
    __slots__ = ("_labels", "_name", "_value", "_text")

    def __init__(self, name: str, labels: str) -> None:
        self._name = name
        self._labels = labels
        self._value: float = 0
        self._text: str | None = None

    def inc(self, amount: float = 1) -> None:
        amount = number(amount, f"inc() on {self._name}")
        if not amount >= 0:  # also refuses NaN, which compares false with everything
            raise ValueError(f"counters only go up: inc({amount!r}) on {self._name}; use a gauge")
        self._value += amount
        self._text = None

    @property
    def value(self) -> float:
        return self._value

    def _render(self) -> str:
        text = self._text
        if text is None:
            text = self._text = f"{self._name}{self._labels} {format_value(self._value)}\n"
        return text


class GaugeChild(CounterChild):
    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        self._value += number(amount, f"inc() on {self._name}")
        self._text = None

    def dec(self, amount: float = 1) -> None:
        self._value -= number(amount, f"dec() on {self._name}")
        self._text = None

    def set(self, value: float) -> None:
        self._value = number(value, f"set() on {self._name}")
        self._text = None


class HistogramChild:
    # No per-series container is created at render time (the label text is one str): a first
    # scrape of 20,000 histograms would otherwise allocate 20,000 lists and set off a full
    # garbage collection that holds the loop for tens of milliseconds.
    __slots__ = ("_bounds", "_les", "_counts", "_sum", "_spec", "_inner", "_text")

    def __init__(self, name: str, label_names: Sequence[str], values: Sequence[str],
                 bounds: Sequence[float], les: Sequence[str] | None = None) -> None:
        self._bounds = bounds  # sorted upper bounds, the last is +Inf
        self._les = les if les is not None else tuple(format_value(b) for b in bounds)  # shared
        self._counts = [0] * len(bounds)  # per bucket, not cumulative
        self._sum: float = 0
        self._spec = (name, label_names, values)
        self._inner: str | None = None  # 'job_id="a",' formatted at the first render, not on the run path
        self._text: str | None = None

    def observe(self, value: float) -> None:
        value = number(value, f"observe() on {self._spec[0]}")
        if math.isnan(value):  # bisect would count NaN in the lowest bucket, and _sum would stay NaN
            raise ValueError(f"histogram {self._spec[0]} cannot observe NaN")
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._text = None

    @property
    def count(self) -> int:
        return sum(self._counts)

    @property
    def sum(self) -> float:
        return self._sum

    def _render(self) -> str:
        text = self._text
        if text is None:
            name, label_names, values = self._spec
            inner = self._inner
            if inner is None:
                inner = self._inner = format_labels(label_names, values)[1:-1] + "," if label_names else ""
            plain = "{" + inner[:-1] + "}" if inner else ""
            lines = []
            total = 0
            for le, n in zip(self._les, self._counts, strict=True):
                total += n
                lines.append(f'{name}_bucket{{{inner}le="{le}"}} {total}\n')
            lines.append(f"{name}_sum{plain} {format_value(self._sum)}\n")
            lines.append(f"{name}_count{plain} {total}\n")
            text = self._text = "".join(lines)
        return text
