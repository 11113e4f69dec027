"""The CLI's store-facing commands: db, jobs, runs, next, trigger, schedule, config, backfill.

Each opens the store named by the settings (or --dsn), does one thing, prints plain text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from piko.clock import SystemClock
from piko.errors import ConfigError

UTC = timezone.utc


def _parse_time(text: str, what: str) -> datetime:
    from piko.store.codec import from_db

    try:
        value = from_db(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a time (use ISO 8601, e.g. 2026-01-01T00:00:00Z)") from None
    assert value is not None
    return value


_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)


def _parse_after(text: str, tz: str) -> datetime:
    """--after: a time with an offset as given; a naive one is a wall time in --tz."""
    from piko.triggers.timeparse import localize
    from piko.triggers.zones import resolve_zone

    value = _parse_time(text, "--after")
    if _OFFSET.search(text.strip()):
        return value
    return localize(value.replace(tzinfo=None), resolve_zone(tz))


def add_ops_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    trig = sub.add_parser("trigger", help="run JOB once now (manual run)")
    trig.add_argument("target", help="jobs.py or module[:app] that registers JOB")
    trig.add_argument("job_id")
    trig.add_argument("--config", help="JSON object overriding the job's config for this run")
    common(trig)

    sched = sub.add_parser("schedule", help="create or change JOB's schedule row")
    sched.add_argument("job_id")
    kind = sched.add_mutually_exclusive_group()
    kind.add_argument("--cron", help="crontab text or JSON fields")
    kind.add_argument("--interval", help='JSON, e.g. {"seconds": 10}')
    kind.add_argument("--date", help='run once at this time, e.g. "2026-01-08 10:00:00"')
    sched.add_argument("--timezone")
    on = sched.add_mutually_exclusive_group()
    on.add_argument("--enable", action="store_true")
    on.add_argument("--disable", action="store_true")
    common(sched)

    conf = sub.add_parser("config", help="store a new config version for JOB")
    conf.add_argument("job_id")
    conf.add_argument("json", help="the config as a JSON object")
    conf.add_argument("--effective-from", help="apply from this time on (default: at once)")
    common(conf)

    bf = sub.add_parser("backfill", help="run each data window of JOB between --start and --end once")
    bf.add_argument("target")
    bf.add_argument("job_id")
    bf.add_argument("--start", required=True)
    bf.add_argument("--end", required=True)
    common(bf)


def _bare(args: argparse.Namespace) -> Any:
    from piko.cli import _bare_app

    return _bare_app(args)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _log_like_run(app: Any) -> None:
    """Commands that run jobs log as `piko run` does: same level and format, secrets masked."""
    from piko.observability.logging import configure_logging

    configure_logging(app.settings.log_level, app.settings.log_json)


def _require_existing(app: Any) -> None:
    """Read-only commands do not create a database: a missing SQLite file is an error."""
    path = getattr(app.store, "path", None)
    if path is not None and app.store.dialect == "sqlite" and not os.path.exists(path):
        raise ConfigError(f"no piko database at {os.path.abspath(path)}: run `piko db init` or `piko run FILE` "
                          f"first, or name it with --dsn")


async def _with_store(app: Any, fn: Callable[[Any], Any]) -> Any:
    store = app.store
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def cmd_db(args: argparse.Namespace) -> int:
    app = _bare(args)
    if args.action == "check":
        _require_existing(app)

    async def go(store: Any) -> None:
        from piko.store.schema import latest_version

        version = await store.schema_version()
        print(f"{store.description}: schema version {version} (newest {latest_version(store.dialect)}) - ok")

    asyncio.run(_with_store(app, go))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    app = _bare(args)
    _require_existing(app)
    runs = asyncio.run(_with_store(app, lambda s: s.recent_runs(args.job_id, args.limit)))
    print(f"{'run_id':>7} {'job_id':<24} {'scheduled (UTC)':<26} {'status':<10} {'att':>3} {'secs':>8}  error")
    for r in runs:
        secs = f"{r.duration_s:.3f}" if r.duration_s is not None else "-"
        err = f"{r.error_type}: {r.error_message}" if r.error_type else ""
        when = r.scheduled_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]  # one width for every row
        print(f"{r.run_id:>7} {r.job_id[:24]:<24} {when:<26} {r.status.value:<10} "
              f"{r.attempt:>3} {secs:>8}  {err[:100]}")
    if not runs:
        print("(no runs recorded yet)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from piko.cli import _app
    from piko.core.reconcile import build_trigger, check_row_options
    from piko.triggers.preview import next_fire_times

    app = _app(args)
    path = getattr(app.store, "path", None)
    is_missing = path is not None and app.store.dialect == "sqlite" and not os.path.exists(path)
    rows = {} if is_missing else {r.job_id: r for r in asyncio.run(_with_store(app, lambda s: s.load_schedules()))}
    now = SystemClock().now()
    for spec in sorted(app.registry, key=lambda j: j.job_id):
        row = rows.get(spec.job_id) or spec.default_schedule_row()
        if row is None:
            print(f"{spec.job_id}: no schedule (manual runs only)")
            continue
        state = "" if row.enabled else " [disabled]"
        try:
            check_row_options(row)
            trig = build_trigger(row, app.settings.timezone)
            times = ", ".join(t.isoformat() for t in next_fire_times(trig, now, args.n)) or "never again"
            print(f"{spec.job_id}: {row.schedule_type} {row.schedule_expr}{state} -> next: {times}")
        except ConfigError as exc:  # TriggerSpecError is one
            print(f"{spec.job_id}: {row.schedule_type} {row.schedule_expr}{state} -> INVALID: {exc}")
    for job_id in sorted(set(rows) - {s.job_id for s in app.registry}):
        print(f"{job_id}: stored schedule, but no code registers this job id")
    return 0


def print_next(args: argparse.Namespace) -> int:
    from piko.triggers import trigger_from_stored
    from piko.triggers.preview import next_fire_times, trigger_from_text

    after = _parse_after(args.after, args.tz) if args.after else SystemClock().now()
    if args.kind:  # what a scheduled_job row of that type may hold: raw text, a JSON string or object
        trigger = trigger_from_stored(args.kind, args.expr, args.tz, default_start=after)
    else:
        trigger = trigger_from_text(args.expr, args.tz, default_start=after)
    times = next_fire_times(trigger, after, args.n)
    for t in times:
        print(t.isoformat())
    if not times and args.n > 0:
        print("(this schedule never fires after", after.isoformat() + ")")
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from piko.cli import _app

    app = _app(args)
    config = _json_object(args.config, "--config") if args.config else None
    _log_like_run(app)

    async def go() -> Any:
        try:
            return await app.run_job(args.job_id, config=config)
        finally:
            await app.stop()  # drains the writer and the CPU pool a manual run may have used

    outcome = asyncio.run(go())
    print(f"run {outcome.run_id} of {args.job_id}: {outcome.status.value}"
          + (f" ({outcome.error_type}: {outcome.error_message})" if outcome.error_type else ""))
    return 0 if outcome.status.value == "SUCCESS" else 1


def cmd_schedule(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from piko.core.types import ScheduleRow
    from piko.triggers import trigger_from_stored

    app = _bare(args)
    kind, expr = next(((k, v) for k, v in (("cron", args.cron), ("interval", args.interval),
                                           ("date", args.date)) if v), (None, None))
    if kind == "date" and expr and not expr.lstrip().startswith("{"):
        expr = json.dumps({"run_date": expr})

    async def go(store: Any) -> str:
        rows = {r.job_id: r for r in await store.load_schedules()}
        row = rows.get(args.job_id)
        if row is None and kind is None:
            raise ConfigError(f"job {args.job_id!r} has no schedule yet: give --cron, --interval or --date")
        row = row or ScheduleRow(args.job_id, kind or "cron", expr or "")
        if kind is not None:
            row = replace(row, schedule_type=kind, schedule_expr=expr)
        if args.timezone:
            row = replace(row, timezone=args.timezone)
        if args.enable or args.disable:
            row = replace(row, enabled=bool(args.enable))
        trigger_from_stored(row.schedule_type, row.schedule_expr, row.timezone or app.settings.timezone)
        await store.upsert_schedule(row)
        return f"{row.job_id}: {row.schedule_type} {row.schedule_expr} ({'enabled' if row.enabled else 'disabled'})"

    print(asyncio.run(_with_store(app, go)))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from piko.core.types import ConfigRow

    value = _json_object(args.json, "config")
    when = _parse_time(args.effective_from, "--effective-from") if args.effective_from else None
    app = _bare(args)
    row = ConfigRow(args.job_id, json.dumps(value, sort_keys=True), effective_from=when)
    asyncio.run(_with_store(app, lambda s: s.upsert_config(row)))
    print(f"{args.job_id}: config stored" + (f", effective from {when.isoformat()}" if when else ""))
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from piko.cli import _app
    from piko.core.backfill import previous_fire, windows_between
    from piko.core.reconcile import build_trigger

    app = _app(args)
    start, end = _parse_time(args.start, "--start"), _parse_time(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end {args.end!r} must be after --start {args.start!r}")
    _log_like_run(app)

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
            # windows stay on the schedule's grid: a --start between two fires begins at the one before
            # it, or the first window would be a stub that marks its whole end time done
            first = previous_fire(trigger, start + timedelta(microseconds=1))
            windows, extra = windows_between(trigger, first or start, end, 100_000)
            if not windows:
                print(f"{args.job_id}: no data window ends between {start.isoformat()} and {end.isoformat()}")
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


OPS_HANDLERS = {"trigger": cmd_trigger, "schedule": cmd_schedule, "config": cmd_config, "backfill": cmd_backfill}
