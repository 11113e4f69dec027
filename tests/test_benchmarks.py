"""The benchmark suite's own code: row normalising, statistics, outputs, the PNG, the runner.

Synthetic rows for the pure parts; one real `python -m benchmarks --quick --only footprint`
with one sample per figure (a few seconds) for the runner end to end.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from benchmarks import bench_scheduler, plot, report, run

ROOT = Path(__file__).resolve().parents[1]


def sample(case: str, metric: str, unit: str, ours: list[float], peer: list[float] | None,
           better: str = "lower", **more: object) -> dict:
    return {"bench": "scheduler", "case": case, "metric": metric, "unit": unit, "better": better,
            "samples": ours, "peer": "APScheduler" if peer is not None else None, "peer_samples": peer or [],
            **more}


# -- normalising -----------------------------------------------------------------------------------


def test_value_rows_become_one_metric_with_its_peer_sample():
    rows = report.normalise([{"bench": "writer", "case": "noop sink", "impl": "piko", "value": 10, "unit": "intents/s",
                              "peer": "asyncio.Queue", "peer_value": 20, "ratio": 0.5, "vs_memory": 0.1}])
    assert len(rows) == 1
    row = rows[0]
    assert (row["samples"], row["peer_samples"], row["better"]) == ([10.0], [20.0], "higher")
    assert row["extra"] == {"vs_memory": 0.1}


def test_http_rows_become_requests_per_second_and_p99():
    raw = {"bench": "http", "case": "/healthz c=16", "impl": "piko", "rps": 900.0, "p99_ms": 2.0,
           "peer": "uvicorn+fastapi", "peer_rps": 300.0, "peer_p99_ms": 6.0, "ratio": 3.0}
    rps, p99 = report.normalise([raw])
    assert (rps["metric"], rps["better"], rps["samples"], rps["peer_samples"]) == ("requests/s", "higher", [900.0],
                                                                                   [300.0])
    assert (p99["metric"], p99["better"], p99["samples"], p99["peer_samples"]) == ("latency p99", "lower", [2.0],
                                                                                   [6.0])


def test_per_call_rows_are_lower_is_better_and_a_missing_peer_stays_missing():
    row, = report.normalise([{"bench": "triggers", "case": "cron next", "us_per_call": 3.0, "peer": "croniter",
                              "peer_us": None}])
    assert (row["better"], row["unit"], row["peer"], row["peer_samples"]) == ("lower", "us/call", None, [])


def test_units_decide_which_direction_is_better():
    assert [report.better_for(u) for u in ("req/s", "x vs serial", "ms", "MiB", "us/item")] == \
        ["higher", "higher", "lower", "lower", "lower"]


# -- statistics ------------------------------------------------------------------------------------


def test_repeats_merge_into_median_min_max_with_ratio_oriented_to_piko():
    rows = [sample("c", "lateness p99", "ms", [10.0], [30.0]), sample("c", "lateness p99", "ms", [12.0], [33.0]),
            sample("c", "lateness p99", "ms", [11.0], [36.0])]
    out, = report.summarise(rows)
    assert out["piko"] == {"median": 11.0, "min": 10.0, "max": 12.0, "n": 3}
    assert out["peer_stats"]["median"] == 33.0
    assert out["ratio"] == pytest.approx(3.0)  # lower is better: peer / piko
    assert out["noisy"] is False


def test_rates_use_piko_over_peer_and_a_wide_spread_is_flagged_noisy():
    out, = report.summarise([sample("c", "fires/s", "fires/s", [100.0, 50.0, 150.0], [200.0, 200.0], "higher")])
    assert out["ratio"] == pytest.approx(0.5)
    assert out["noisy"] is True
    assert report.slower_lines([out]) == [out]


def test_one_sample_cannot_be_judged_noisy_and_no_peer_means_no_ratio():
    out, = report.summarise([sample("c", "RSS", "MiB", [40.0], None)])
    assert out["noisy"] is None and out["ratio"] is None and out["peer"] is None


def test_zero_medians_do_not_divide_by_zero():
    assert report.oriented_ratio(0.0, 5.0, "lower") == math.inf
    assert report.oriented_ratio(0.0, 0.0, "higher") is None


# -- outputs ---------------------------------------------------------------------------------------


def summary_with_error_and_note() -> list[dict]:
    rows = [sample("1,000 interval jobs, kernel only", "lateness p50", "ms", [5.0, 6.0], [9.0, 10.0],
                   note="peer fell behind"),
            {"bench": "mysql", "case": "", "skipped": "no server"},
            {"bench": "http", "case": "", "error": "exit status 1: boom"}]
    return report.summarise(rows)


def test_terminal_table_shows_figures_errors_skips_and_footnotes():
    text = report.render_table(summary_with_error_and_note())
    assert "5.50 (5.00-6.00)" in text and "9.50 (9.00-10.0)" in text and "1.73x" in text
    assert "ERROR: exit status 1: boom" in text and "skipped: no server" in text
    assert "[1] scheduler: peer fell behind" in text


def test_markdown_has_the_machine_the_command_and_one_line_per_figure():
    machine = {"cpu": "Test CPU", "cores": 2, "python": "3.11", "os": "Linux", "date": "2026-01-01"}
    text = report.render_markdown(summary_with_error_and_note(), machine, "python -m benchmarks")
    assert "Test CPU, 2 cores" in text and "`python -m benchmarks`" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3
    assert all(line.count("|") - line.count("\\|") == 7 for line in table)


# -- the PNG ---------------------------------------------------------------------------------------


def scheduler_summary() -> list[dict]:
    rows = []
    for jobs, scale in ((1000, 1.0), (10000, 8.0)):
        for which, base in (("end to end (SQLite)", 100.0), ("kernel only", 20.0)):
            for metric in ("lateness p50", "lateness p99"):
                rows.append(sample(f"{jobs:,} interval jobs, {which}", metric, "ms", [base * scale],
                                   [50.0 * scale], ceiling="loop.call_at", ceiling_samples=[2.0 * scale]))
    return report.summarise(rows)


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    return width, height, zlib.decompress(chunks[b"IDAT"])


def test_lateness_chart_is_a_valid_png_with_one_series_per_implementation_and_percentile(tmp_path):
    summary = scheduler_summary()
    assert len(plot.lateness_series(summary)) == 8  # piko e2e, kernel, APScheduler, call_at x p50/p99
    path = plot.lateness_chart(summary, tmp_path / "sub" / "lateness.png")
    width, height, raw = decode_png(path.read_bytes())
    assert len(raw) == height * (1 + width * 3)
    assert len(set(raw)) > 10  # something was drawn


def test_the_sqlite_job_store_peer_has_its_own_series_and_leaves_the_memory_peers_alone():
    both = [{**sample("1,000 interval jobs, end to end, both on SQLite", metric, "ms", [100.0], [1800.0]),
             "peer": "APScheduler 3.11 AsyncIOScheduler + SQLAlchemyJobStore (SQLite)"}
            for metric in ("lateness p50", "lateness p99")]
    summary = scheduler_summary() + report.summarise(both)
    series = {label: points for label, _, _, points in plot.lateness_series(summary)}
    assert series["APSCHEDULER + SQLITE P50"] == [(1000.0, 1800.0)]
    assert series["APSCHEDULER P50"] == [(1000.0, 50.0), (10000.0, 400.0)]


def test_no_scheduler_rows_means_no_chart(tmp_path):
    assert plot.lateness_chart(report.summarise([sample("x", "m", "ms", [1.0], [2.0])]), tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_every_glyph_is_five_by_seven():
    assert all(len(rows) == 7 and all(len(r) == 5 for r in rows) for rows in plot.FONT.values())


# -- the scheduler bench's peers ---------------------------------------------------------------------


def collected(p50_ms: float, unstarted: int = 0) -> bench_scheduler.Collected:
    got = bench_scheduler.Collected()
    got.add({"bursts": [{"p50": p50_ms, "p99": p50_ms, "max": p50_ms}], "fires": 1000.0, "runs": 1000.0,
             "unstarted": unstarted, "expected": 1000})
    return got


def test_each_apscheduler_job_store_is_named_on_its_own_lines():
    piko, rows = collected(80.0), bench_scheduler._rows
    memory = rows("1,000 interval jobs, end to end (SQLite)", piko, collected(40.0), piko, True)
    on_sqlite = rows("1,000 interval jobs, end to end, both on SQLite", piko, collected(1800.0, 5), None, True,
                     bench_scheduler.ON_SQLITE)
    assert {r["peer"] for r in memory} == {"APScheduler 3.11 AsyncIOScheduler"}
    assert [r["note"] for r in memory] == [None] * 4 + ["APScheduler: jobs executed (memory job store, nothing "
                                                        "recorded)"]
    assert {r["peer"] for r in on_sqlite} == {"APScheduler 3.11 AsyncIOScheduler + SQLAlchemyJobStore (SQLite)"}
    assert all(r["note"].startswith("APScheduler SQLAlchemyJobStore on SQLite: job state persisted") and
               "runs not recorded" in r["note"] and "fell behind" in r["note"] for r in on_sqlite)
    assert all("ceiling" not in r for r in on_sqlite)
    assert not report.multi_peer_benches(report.summarise(memory + on_sqlite))  # one line per figure, not pivoted


def test_the_sqlite_job_store_peer_sits_out_a_case_projected_over_its_budget():
    assert bench_scheduler._sqlite_peer_skip(1000, "interval", []) is None  # nothing measured yet: it runs
    assert bench_scheduler._sqlite_peer_skip(1000, "cron", [0.002]) is None  # 2 s to add 1,000 jobs
    reason = bench_scheduler._sqlite_peer_skip(10_000, "cron", [0.002, 0.003])
    assert reason and "10,000 cron jobs: not run" in reason and "25 s" in reason and "10 s budget" in reason


# -- the runner --------------------------------------------------------------------------------------


def test_a_crashing_benchmark_becomes_an_error_row():
    rows, _ = run.run_child("no_such_bench", quick=True, repeat=None, timeout_s=60)
    assert rows[0]["bench"] == "no_such_bench" and "exit status 1" in rows[0]["error"]


def test_unknown_names_in_only_are_refused():
    with pytest.raises(SystemExit, match="unknown benchmark"):
        run.select("footprint,nope")


@pytest.mark.slow
def test_quick_footprint_run_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "footprint", "--repeat", "1",
                           "--no-plot", "--json", str(out), "--markdown"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cores, Python" in proc.stdout and "| footprint: import piko |" in proc.stdout
    payload = json.loads(out.read_text())
    figures = [r for r in payload["results"] if "error" not in r]
    assert {r["metric"] for r in figures} >= {"import time", "RSS after import", "start-up", "RSS"}
    assert all(r["piko"]["n"] >= 1 for r in figures)


def test_trigger_benchmark_shows_pikos_figures_when_no_peer_is_installed(monkeypatch):
    from benchmarks import bench_triggers

    def missing(*_args):
        raise ImportError("not installed")

    monkeypatch.setattr(bench_triggers, "PEERS", {"croniter": missing, "cronsim": missing})
    rows = bench_triggers.run(quick=True)
    assert rows and all("peer" not in r and r["us_per_call"] > 0 for r in rows)
    assert {r["case"] for r in rows} == set(bench_triggers.EXPRESSIONS)
    [normalised] = report.normalise([rows[0]])
    assert normalised["peer"] is None and normalised["samples"]
