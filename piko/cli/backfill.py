"""`piko backfill`: run each data window of a job between two times once, in order.

Windows follow the schedule's grid (core/backfill.py decides which); each runs with the
run lock at its end time, so a second backfill of the same range runs nothing twice. A window
whose newest run did not succeed (core/lifecycle.RERUNNABLE: FAILED, TIMEOUT, CANCELLED, ABANDONED,
MISSED, SKIPPED) runs again only with --rerun-failed, as the next attempt, claimed only while
that run is still the newest of its time: two backfills racing re-run it once. Every window gets
one line saying what was done, the end a total; exit 1 if a window failed or is left failed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

from piko.cli.args import log_like_run, open_existing, parse_time, target_app
from piko.core.backfill import rerun_of
from piko.core.lifecycle import RERUNNABLE
from piko.core.types import DataInterval, RunOutcome, RunRecord, RunStatus
from piko.errors import ConfigError

# What happened to a window, in the order the total names them; FAILING ones make the exit status 1.
RAN, RERAN, DONE, FAILED = "ran", "re-ran", "already done", "failed"
LEFT, ELSEWHERE = "already failed", "running elsewhere"
FAILING = (FAILED, LEFT)


def cmd_backfill(args: argparse.Namespace) -> int:
    from piko.core.backfill import aligned_windows, no_window_reason
    from piko.core.reconcile import build_trigger

    app = target_app(args)
    start, end = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end {args.end!r} must be after --start {args.start!r}")
    open_existing(app, "rw")
    log_like_run(app)

    async def go() -> int:
        runner = await app.manual_runner()
        try:
            rows = {r.job_id: r for r in await app.store.load_schedules()}
            row = rows.get(args.job_id)
            spec = app.registry.get(args.job_id)
            row = row or (spec.default_schedule_row() if spec else None)
            if row is None:
                raise ConfigError(f"job {args.job_id!r} has no schedule to derive windows from")
            trigger = build_trigger(row, app.settings.timezone)
            windows, extra = aligned_windows(trigger, start, end, 100_000)
            if not windows:
                print(f"{args.job_id}: no data window ends between {start.isoformat()} and {end.isoformat()}: "
                      f"{no_window_reason(trigger, start)}")
                return 0
            tally: Counter[str] = Counter()
            queued = is_queued(app, args)
            for n, w in enumerate(windows, 1):
                verdict, text = await _one_window(app.store, runner, args.job_id, w, args.rerun_failed, queued)
                tally[verdict] += 1
                print(f"[{n}/{len(windows)}] [{w.start.isoformat()}, {w.end.isoformat()}): {text}", flush=True)
            print(total_line(len(windows), tally))
            if extra:
                print(f"{extra} more window(s) not run: narrow --start/--end")
            return 1 if any(tally[v] for v in FAILING) else 0
        finally:
            await app.stop()  # drains the writer and the CPU pool a manual run may have used

    return asyncio.run(go())


def is_queued(app: Any, args: argparse.Namespace) -> bool:
    """Cluster execution queues manual runs for any worker, unless --local (or a one-off --config)."""
    return app.settings.execution == "cluster" and not getattr(args, "local", False)


async def _run(runner: Any, job_id: str, w: DataInterval, is_queued: bool, **kw: Any) -> RunOutcome:
    if not is_queued:
        return await runner.run_job(job_id, w.end, kind="backfill", data_interval=w, **kw)  # type: ignore[no-any-return]
    out = await runner.queue_run(job_id, w.end, kind="backfill", data_interval=w, **kw)
    return out if out.run_id is None else await runner.wait_run(out.run_id)  # type: ignore[no-any-return]


async def _one_window(store: Any, runner: Any, job_id: str, w: DataInterval, rerun: bool,
                      is_queued: bool = False) -> tuple[str, str]:
    """Run one window (or say why not): (verdict, text for its line)."""
    out = await _run(runner, job_id, w, is_queued)
    if out.run_id is not None:
        return (RAN if out.status is RunStatus.SUCCESS else FAILED), f"ran: {_status(out)}"
    prev = await store.latest_run(job_id, w.end)
    if prev is None or prev.status not in RERUNNABLE or not rerun:
        return _standing(prev)
    out = await _run(runner, job_id, w, is_queued, **rerun_of(prev))
    last = await store.latest_run(job_id, w.end)
    if out.run_id is None:  # another backfill re-ran it first (or is re-running it)
        verdict, text = _standing(last)
        return verdict, (text if verdict in (DONE, ELSEWHERE) else f"{text} (re-run elsewhere meanwhile)")
    attempt = last.attempt if last is not None and last.run_id == out.run_id else prev.attempt + 1
    return (RERAN if out.status is RunStatus.SUCCESS else FAILED), f"re-ran: {_status(out, attempt)}"


def _standing(run: RunRecord | None) -> tuple[str, str]:
    """A window this backfill did not run: what its newest run says."""
    if run is None:  # its lock is taken but no run is recorded (rows deleted by hand)
        return FAILED, "not run: its time is taken, but no run of it is recorded"
    if run.status is RunStatus.SUCCESS:
        return DONE, "already done (SUCCESS)"
    if run.status is RunStatus.RUNNING:
        since = run.started_at.isoformat() if run.started_at else "?"
        return ELSEWHERE, f"running elsewhere (attempt {run.attempt} on {run.instance_id}, since {since})"
    return LEFT, f"already {run.status.value}: use --rerun-failed"


def _status(out: RunOutcome, attempt: int | None = None) -> str:
    """SUCCESS | FAILED (ErrType: message), with the attempt when it is a re-run."""
    details = [f"attempt {attempt}"] if attempt is not None else []
    if out.error_type:
        message = (out.error_message or "").strip().splitlines()
        details.append(f"{out.error_type}: {message[0][:200] if message else ''}".rstrip(": "))
    return out.status.value + (f" ({'; '.join(details)})" if details else "")


def total_line(count: int, tally: Counter[str]) -> str:
    """'120 windows: 100 ran, 15 already done, 5 failed' (only the kinds that happened)."""
    parts = [f"{tally[v]} {v}" + (" (use --rerun-failed)" if v == LEFT else "")
             for v in (RAN, RERAN, DONE, FAILED, LEFT, ELSEWHERE) if tally[v]]
    return f"{count} window{'s' if count != 1 else ''}: {', '.join(parts)}"
