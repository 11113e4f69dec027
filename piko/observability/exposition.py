"""Prometheus text exposition 0.0.4: value formatting and escaping (pure).

Split from metrics.py so the registry stays about series and the text rules live in one
place. Imports nothing from piko.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
INF = math.inf


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ints plain, floats via repr, +Inf/-Inf/NaN."""
    if type(value) is int:
        return str(value)
    text = repr(float(value))
    if text[-1] in "fn":  # 'inf', '-inf', 'nan'
        return {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}[text]
    return text


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    """`{a="1",b="2"}` (escaped), or "" when there are no labels."""
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"
