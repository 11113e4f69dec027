"""Prometheus text exposition 0.0.4: name rules, value formatting and escaping (pure).

Split from metrics.py so the registry stays about series and the text rules live in one
place. Every string that reaches the body passes through here, and what comes out always
encodes as UTF-8: one odd label value (a file name from os.fsdecode holding lone
surrogates) must never turn the whole scrape into a 500. Imports nothing from piko.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)

# \A...\Z, not ^...$: "$" also matches before a final newline, which would let "x\n" through.
METRIC_NAME = re.compile(r"\A[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"\A[a-zA-Z_][a-zA-Z0-9_]*\Z")
INF = math.inf


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ints plain, floats via repr, +Inf/-Inf/NaN."""
    if type(value) is int and -(2**63) <= value <= 2**63:
        return str(value)
    try:
        text = repr(float(value))
    except OverflowError:  # an int sum beyond float64: what Prometheus would read it as
        return "+Inf" if value > 0 else "-Inf"
    if text[-1] in "fn":  # 'inf', '-inf', 'nan'
        return {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}[text]
    return text


def utf8_safe(text: str) -> str:
    """`text` with lone surrogates written as `\\udcff` (backslashreplace), so it encodes as UTF-8.

    The escape is applied before the exposition escaping, whose `\\\\` keeps it readable: a
    parser reads the label value back as the visible text `bad\\udcff.csv`.
    """
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def escape_label_value(value: str) -> str:
    return utf8_safe(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return utf8_safe(text).replace("\\", "\\\\").replace("\n", "\\n")


def format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    """`{a="1",b="2"}` (escaped), or "" when there are no labels."""
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"
