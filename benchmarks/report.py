"""Benchmark rows in one shape, their statistics, and the three outputs (terminal, JSON, Markdown).

Each bench module returns rows in its own words (`value`/`peer_value`, `rps`/`peer_rps`,
`us_per_call`/`peer_us`, ...). `normalise` turns each into sample rows: bench, case, metric,
unit, which direction is better, piko's samples, the peer's samples from the same run (and
an optional ceiling). `summarise` merges repeats and gives median, min and max per side,
the ratio of medians oriented so that > 1 means piko is better, and a noisy flag when
(max - min) / median exceeds NOISY on either side. Pure: no I/O, no subprocesses.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from typing import Any

NOISY = 0.25
Row = dict[str, Any]

# -- normalising what the modules return -------------------------------------------------------


def better_for(unit: str) -> str:
    """'higher' for rates and speed-ups, 'lower' for times, latencies and sizes."""
    unit = unit.lower()
    return "higher" if "/s" in unit or unit.startswith("x") or unit in ("rps", "ops") else "lower"


def sample_row(raw: Row, metric: str, unit: str, value: Any, peer_value: Any, *, better: str | None = None,
               peer: str | None = None, used: Iterable[str] = ()) -> Row:
    """One metric of one raw row, with one sample per side."""
    consumed = {"bench", "case", "impl", "unit", "peer", "ratio", "metric", *used}
    peer_name = peer if peer is not None else raw.get("peer")
    has_peer = peer_name is not None and _is_number(peer_value)
    return {
        "bench": raw.get("bench", "?"), "case": str(raw.get("case", "")), "metric": metric, "unit": unit,
        "better": better or better_for(unit),
        "samples": [float(value)] if _is_number(value) else [],
        "peer": peer_name if has_peer else None,
        "peer_samples": [float(peer_value)] if has_peer else [],
        "extra": {k: v for k, v in raw.items() if k not in consumed},
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _http(raw: Row) -> list[Row]:
    if "cold_ms" in raw:  # in-process render: prometheus_client has no cache, so one figure serves both
        render = ("cold_ms", "warm_ms", "peer_ms")
        return [sample_row(raw, "render, cold", "ms", raw["cold_ms"], raw.get("peer_ms"), used=render),
                sample_row(raw, "render, cached", "ms", raw["warm_ms"], raw.get("peer_ms"), used=render)]
    used = ("rps", "peer_rps", "p99_ms", "peer_p99_ms")
    return [sample_row(raw, "requests/s", "req/s", raw["rps"], raw.get("peer_rps"), used=used),
            sample_row(raw, "latency p99", "ms", raw["p99_ms"], raw.get("peer_p99_ms"), used=used)]


def _per_call(raw: Row) -> list[Row]:
    """`us_per_call`/`peer_us` rows (triggers); their own min/max, when given, join the samples."""
    peer_key = next((k for k in ("peer_us", "peer_us_per_call") if k in raw), "peer_us")
    used = ("us_per_call", peer_key, "min_us", "max_us", "peer_min_us", "peer_max_us", "tz", "mode")
    row = sample_row(raw, raw.get("metric", "next fire time"), raw.get("unit", "us/call"), raw["us_per_call"],
                     raw.get(peer_key), better="lower", used=used)
    if str(row["bench"]).startswith("trigger"):
        row["bench"] = "triggers"
        row["case"] = ", ".join(str(x) for x in (raw.get("case"), raw.get("tz"), raw.get("mode")) if x)
    for side, lo, hi in (("samples", "min_us", "max_us"), ("peer_samples", "peer_min_us", "peer_max_us")):
        if row[side] and _is_number(raw.get(lo)) and _is_number(raw.get(hi)):
            row[side] = [float(raw[lo]), *row[side], float(raw[hi])]
    return [row]


def _generic(raw: Row) -> list[Row]:
    if "value" in raw:
        unit = raw.get("unit", "")
        return [sample_row(raw, raw.get("metric", ""), unit, raw["value"], raw.get("peer_value"),
                           better=raw.get("better"), used=("value", "peer_value"))]
    pairs = [k for k in raw if _is_number(raw[k]) and f"peer_{k}" in raw]
    return [sample_row(raw, k, raw.get("unit", k), raw[k], raw.get(f"peer_{k}"), used=(k, f"peer_{k}"))
            for k in pairs]


ADAPTERS: dict[str, Callable[[Row], list[Row]]] = {"http": _http}


def normalise(raw_rows: Iterable[Row]) -> list[Row]:
    """Raw module rows -> sample rows (rows already carrying `samples` pass through)."""
    out: list[Row] = []
    for raw in raw_rows:
        if "samples" in raw or "error" in raw or "skipped" in raw:
            out.append(dict(raw))
        elif "us_per_call" in raw:
            out.extend(_per_call(raw))
        else:
            out.extend(ADAPTERS.get(str(raw.get("bench")), _generic)(raw))
    return out


def merge(sample_rows: Iterable[Row]) -> list[Row]:
    """Concatenate the samples of rows with the same (bench, case, metric, peer), in first-seen order."""
    merged: dict[tuple[str, str, str, str], Row] = {}
    others: list[Row] = []
    for row in sample_rows:
        if "samples" not in row:
            others.append(row)
            continue
        key = (row["bench"], row["case"], row.get("metric", ""), row.get("peer") or "")
        if key not in merged:
            merged[key] = {**row, "samples": [], "peer_samples": [], "ceiling_samples": []}
        into = merged[key]
        for side in ("samples", "peer_samples", "ceiling_samples"):
            into[side] = into[side] + list(row.get(side) or [])
        for name in ("peer", "ceiling", "note"):
            into[name] = into.get(name) or row.get(name)
        into["extra"] = {**into.get("extra", {}), **row.get("extra", {})}
    return list(merged.values()) + others


# -- statistics ------------------------------------------------------------------------------------


def stats(samples: list[float]) -> dict[str, float] | None:
    values = [v for v in samples if _is_number(v)]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def spread(s: dict[str, float] | None) -> float | None:
    """(max - min) / |median|; None without at least two samples."""
    if s is None or s["n"] < 2:
        return None
    if s["median"] == 0:
        return 0.0 if s["max"] == s["min"] else math.inf
    return (s["max"] - s["min"]) / abs(s["median"])


def oriented_ratio(ours: float, peer: float, better: str) -> float | None:
    """> 1 means piko is better: piko/peer for 'higher', peer/piko for 'lower'."""
    num, den = (ours, peer) if better == "higher" else (peer, ours)
    if den == 0:
        return None if num == 0 else math.inf
    return num / den


def summarise(rows: Iterable[Row]) -> list[Row]:
    """Raw or sample rows -> one summary row per (bench, case, metric), plus error/skip rows."""
    out: list[Row] = []
    for row in merge(normalise(rows)):
        if "samples" not in row:
            out.append(row)
            continue
        ours, peer = stats(row["samples"]), stats(row.get("peer_samples") or [])
        ceiling = stats(row.get("ceiling_samples") or [])
        spreads = [s for s in (spread(ours), spread(peer)) if s is not None]
        ratio = oriented_ratio(ours["median"], peer["median"], row["better"]) if ours and peer else None
        out.append({
            "bench": row["bench"], "case": row["case"], "metric": row.get("metric", ""), "unit": row["unit"],
            "better": row["better"], "piko": ours, "peer": row.get("peer") if peer else None, "peer_stats": peer,
            "ratio": ratio, "noisy": max(spreads) > NOISY if spreads else None,
            "ceiling": row.get("ceiling") if ceiling else None, "ceiling_stats": ceiling,
            "note": row.get("note"), "extra": row.get("extra", {}),
        })
    return out


def slower_lines(summary: Iterable[Row]) -> list[Row]:
    return [r for r in summary if r.get("ratio") is not None and r["ratio"] < 1]


# -- formatting ------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt_stats(s: dict[str, float] | None) -> str:
    if s is None:
        return "-"
    if s["n"] < 2 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{fmt(ratio)}x"


def _label(row: Row) -> str:
    return f"{row['case']}: {row['metric']}" if row.get("metric") else row["case"]


def notes(summary: Iterable[Row]) -> dict[tuple[str, str], int]:
    """Each distinct (bench, note) -> its footnote number, in order of first use."""
    numbered: dict[tuple[str, str], int] = {}
    for row in summary:
        if row.get("note"):
            numbered.setdefault((row["bench"], row["note"]), len(numbered) + 1)
    return numbered


def _note_mark(row: Row, numbered: dict[tuple[str, str], int]) -> str:
    return f" [{numbered[(row['bench'], row['note'])]}]" if row.get("note") else ""


def _flags(row: Row) -> str:
    flags = []
    if row.get("noisy"):
        flags.append("noisy")
    if row.get("ratio") is not None and row["ratio"] < 1:
        flags.append("piko slower")
    return ", ".join(flags)


def render_table(summary: list[Row]) -> str:
    """A plain-text table for the terminal, grouped by bench."""
    header = ("case: metric", "unit", "piko median (min-max)", "peer median (min-max)", "ratio", "peer / ceiling",
              "flags")
    lines: list[tuple[str, ...]] = []
    numbered = notes(summary)
    for row in summary:
        if "error" in row or "skipped" in row:
            what = f"ERROR: {row['error']}" if "error" in row else f"skipped: {row['skipped']}"
            lines.append((f"[{row.get('bench', '?')}] {what}",))
            continue
        ceiling = f"; {row['ceiling']} {fmt_stats(row['ceiling_stats'])}" if row.get("ceiling") else ""
        lines.append((f"[{row['bench']}] {_label(row)}", row["unit"], fmt_stats(row["piko"]),
                      fmt_stats(row["peer_stats"]), fmt_ratio(row["ratio"]), f"{row['peer'] or '-'}{ceiling}",
                      _flags(row) + _note_mark(row, numbered)))
    widths = [max(len(x[i]) for x in [header, *lines] if len(x) > 1) for i in range(len(header))]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    text.append("  ".join("-" * w for w in widths))
    for line in lines:
        text.append(line[0] if len(line) == 1 else "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    text.append("ratio > 1 means piko is better (higher rate, or lower time/latency/memory); "
                f"noisy: (max-min)/median > {NOISY:.0%} on either side")
    text.extend(f"[{n}] {bench}: {note}" for (bench, note), n in numbered.items())
    return "\n".join(text)


def multi_peer_benches(summary: Iterable[Row]) -> list[str]:
    """Benches that measure one piko figure against several peers (shown pivoted in Markdown)."""
    peers: dict[tuple[str, str, str], set[str]] = {}
    for row in summary:
        if row.get("peer"):
            peers.setdefault((row["bench"], row["case"], row.get("metric", "")), set()).add(row["peer"])
    return sorted({key[0] for key, names in peers.items() if len(names) > 1})


def render_markdown(summary: list[Row], machine: dict[str, Any] | None = None, command: str = "") -> str:
    """A Markdown table ready for the README, with the machine and the command above it."""
    out = []
    if machine:
        out.append(f"Machine: {machine_line(machine)}  ")
    if command:
        out.append(f"Command: `{command}`")
    if out:
        out.append("")
    pivoted = multi_peer_benches(summary)
    out.append("| benchmark | metric | piko | peer | ratio | peer / ceiling |")
    out.append("| --- | --- | ---: | ---: | ---: | --- |")
    numbered = notes(summary)
    for row in summary:
        if row.get("bench") in pivoted and "error" not in row and "skipped" not in row:
            continue
        if "error" in row or "skipped" in row:
            what = f"error: {row['error']}" if "error" in row else f"skipped: {row['skipped']}"
            out.append(f"| {row.get('bench', '?')} | {_md(what)} | | | | |")
            continue
        noisy = " (noisy)" if row.get("noisy") else ""
        ceiling = f"; {row['ceiling']} {fmt_stats(row['ceiling_stats'])} {row['unit']}" if row.get("ceiling") else ""
        peer = f"{fmt_stats(row['peer_stats'])} {row['unit']}" if row["peer_stats"] else "-"
        out.append(f"| {row['bench']}: {_md(row['case'])} | {_md(row['metric'] or row['unit'])} | "
                   f"{fmt_stats(row['piko'])} {row['unit']} | {peer} | {fmt_ratio(row['ratio'])}{noisy} | "
                   f"{_md((row['peer'] or '-') + ceiling)}{_note_mark(row, numbered)} |")
    for bench in pivoted:
        out.extend(["", *_pivot(bench, [r for r in summary if r.get("bench") == bench and "piko" in r])])
    out.append("")
    out.append("Figures: median (min-max) over the samples; ratio = peer/piko for times and sizes, piko/peer for "
               "rates, so > 1 means piko is better; (noisy): the min-max spread exceeds "
               f"{NOISY:.0%} of the median on one side.")
    out.extend(f"\n[{n}] {bench}: {_md(note)}" for (bench, note), n in numbered.items())
    return "\n".join(out)


def _pivot(bench: str, rows: list[Row]) -> list[str]:
    """One line per (case, metric), one column per peer: 'median (min-max), ratio'."""
    peers = list(dict.fromkeys(r["peer"] for r in rows if r.get("peer")))
    units = sorted({r["unit"] for r in rows})
    lines = [f"{bench} ({', '.join(units)}; each peer cell: median (min-max), ratio to piko):", "",
             "| case | piko | " + " | ".join(_md(p) for p in peers) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in peers) + " |"]
    groups: dict[tuple[str, str], dict[str, Row]] = {}
    for row in rows:
        groups.setdefault((row["case"], row.get("metric", "")), {})[row.get("peer") or ""] = row
    for (case, metric), by_peer in groups.items():
        first = next(iter(by_peer.values()))
        label = f"{case}: {metric}" if metric and len({k[1] for k in groups}) > 1 else case
        cells = []
        for peer in peers:
            cell = by_peer.get(peer)
            noisy = " (noisy)" if cell and cell.get("noisy") else ""
            cells.append(f"{fmt_stats(cell['peer_stats'])}, {fmt_ratio(cell['ratio'])}{noisy}" if cell else "-")
        lines.append(f"| {_md(label)} | {fmt_stats(first['piko'])} | " + " | ".join(cells) + " |")
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def machine_line(machine: dict[str, Any]) -> str:
    return (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, Python {machine.get('python', '?')}, "
            f"{machine.get('os', '?')}, {machine.get('date', '?')}")
