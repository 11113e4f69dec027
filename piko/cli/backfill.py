"""`piko backfill`: run each data window of a job between two times once, in order.

Windows follow the schedule's grid (core/backfill.py decides which); each runs with the
run lock at its end time, so a second backfill of the same range runs nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio

from piko.cli.args import log_like_run, parse_time, target_app
from piko.errors import ConfigError


def cmd_backfill(args: argparse.Namespace) -> int:
    from piko.core.backfill import aligned_windows, no_window_reason
    from piko.core.reconcile import build_trigger

    app = target_app(args)
    start, end = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end {args.end!r} must be after --start {args.start!r}")
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
            failed = 0
            for w in windows:
                out = await runner.run_job(args.job_id, w.end, kind="backfill", data_interval=w)
                mark = out.status.value if out.run_id else "already done"
                print(f"[{w.start.isoformat()}, {w.end.isoformat()}): {mark}")
                failed += out.status.value in ("FAILED", "TIMEOUT")
            if extra:
                print(f"{extra} more window(s) not run: narrow --start/--end")
            return 1 if failed else 0
        finally:
            await app.stop()  # drains the writer and the CPU pool a manual run may have used

    return asyncio.run(go())
