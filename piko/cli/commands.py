"""The commands: run, db, jobs, next, trigger, schedule, config (backfill and runs have their own modules).

Each builds what it needs from its arguments (args.py), does one thing, prints plain text,
and returns its exit status. Heavy imports are lazy: `piko next` never imports a store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from typing import Any

from piko.cli.args import (
    bare_app,
    json_object,
    log_like_run,
    missing_sqlite_file,
    open_existing,
    parse_after,
    parse_time,
    store_mode,
    target_app,
    with_store,
)
from piko.clock import SystemClock
from piko.errors import ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    app = target_app(args)
    print(f"piko: running {len(app.registry)} job(s) from {args.target}; data in {app.store.description}",
          file=sys.stderr)
    print("piko: stop with Ctrl+C or SIGTERM", file=sys.stderr)
    app.run()
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    app = bare_app(args)
    if args.action == "check":
        open_existing(app, "ro")  # reports, changes nothing: no migration

    async def go(store: Any) -> None:
        from piko.store.schema import latest_version

        version = await store.schema_version()
        print(f"{store.description}: schema version {version} (newest {latest_version(store.dialect)}) - ok")

    asyncio.run(with_store(app, go))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    app = target_app(args)
    store_mode(app, "ro")
    missing = missing_sqlite_file(app)
    if missing is not None:
        print(f"piko: no database at {missing} yet: the schedules shown are those declared in code",
              file=sys.stderr)
    rows = {} if missing else {r.job_id: r for r in asyncio.run(with_store(app, lambda s: s.load_schedules()))}
    now = SystemClock().now()
    for spec in sorted(app.registry, key=lambda j: j.job_id):
        if spec.is_task:
            print(f"{spec.job_id}: map task (runs once per item handed to ctx.map)")
            continue
        if spec.step_of is not None:
            print(f"{spec.job_id}: step of workflow {spec.step_of} (runs when its upstream steps are done)")
            continue
        row = rows.get(spec.job_id) or spec.default_schedule_row()
        print(f"{spec.job_id}: {_schedule_summary(row, app.settings.timezone, now, args.n)}")
    for job_id in sorted(set(rows) - {s.job_id for s in app.registry}):
        print(f"{job_id}: stored schedule, but no code registers this job id")
    return 0


def _schedule_summary(row: Any, default_tz: str, now: Any, n: int) -> str:
    """`cron '*/5 * * * *' -> next: ...`; the expression shortened as the logs shorten it; a disabled
    row shows no fire times (it would not fire), an invalid one why it is refused."""
    from piko.core.reconcile import build_trigger, check_row_options
    from piko.errors import TriggerSpecError
    from piko.triggers.preview import next_fire_times

    if row is None:
        return "no schedule (manual runs only)"
    head = f"{row.schedule_type} {TriggerSpecError.preview(row.schedule_expr)}"
    try:
        check_row_options(row)
        trigger = build_trigger(row, default_tz)
    except ConfigError as exc:  # TriggerSpecError is one
        return f"{head}{'' if row.enabled else ' [disabled]'} -> INVALID: {exc}"
    if not row.enabled:
        return f"{head} [disabled]"
    return f"{head} -> next: {', '.join(t.isoformat() for t in next_fire_times(trigger, now, n)) or 'never again'}"


def cmd_next(args: argparse.Namespace) -> int:
    from piko.triggers import trigger_from_stored
    from piko.triggers.preview import next_fire_times, trigger_from_text

    after = parse_after(args.after, args.tz) if args.after else SystemClock().now()
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

    app = target_app(args)
    config = json_object(args.config, "--config") if args.config else None
    open_existing(app, "rw")
    log_like_run(app)

    is_queued = app.settings.execution == "cluster" and not args.local and config is None

    async def go() -> Any:
        try:
            if not is_queued:
                return await app.run_job(args.job_id, config=config)
            runner = await app.manual_runner()
            queued = await runner.queue_run(args.job_id)
            if queued.run_id is not None and not args.no_wait:
                print(f"run {queued.run_id} of {args.job_id}: queued for a worker; waiting for its end "
                      f"(Ctrl+C stops waiting, not the run)", file=sys.stderr)
                return await runner.wait_run(queued.run_id)
            return queued
        finally:
            await app.stop()  # drains the writer and the CPU pool a manual run may have used

    outcome = asyncio.run(go())
    print(f"run {outcome.run_id} of {args.job_id}: {outcome.status.value}"
          + (f" ({outcome.error_type}: {outcome.error_message})" if outcome.error_type else ""))
    return 0 if outcome.status.value in ("SUCCESS", "PENDING") else 1


def cmd_schedule(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from piko.core.types import ScheduleRow
    from piko.triggers import trigger_from_stored

    app = bare_app(args)
    open_existing(app, "rw")
    kind, expr = next(((k, v) for k, v in (("cron", args.cron), ("interval", args.interval),
                                           ("date", args.date)) if v), (None, None))
    if kind == "date" and expr and not expr.lstrip().startswith("{"):
        expr = json.dumps({"run_date": expr})

    async def go(store: Any) -> str:
        rows = {r.job_id: r for r in await store.load_schedules()}
        row = rows.get(args.job_id)
        if row is None and not args.create:
            raise unknown_job(args.job_id, rows, "scheduled_job", store.description)
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

    print(asyncio.run(with_store(app, go)))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from piko.core.types import ConfigRow

    value = json_object(args.json, "config")
    when = parse_time(args.effective_from, "--effective-from") if args.effective_from else None
    app = bare_app(args)
    open_existing(app, "rw")
    row = ConfigRow(args.job_id, json.dumps(value, sort_keys=True), effective_from=when)

    async def go(store: Any) -> None:
        known = {r.job_id for r in await store.load_schedules()} | {r.job_id for r in await store.load_configs()}
        if args.job_id not in known and not args.create:
            raise unknown_job(args.job_id, known, "scheduled_job or job_config", store.description)
        await store.upsert_config(row)

    asyncio.run(with_store(app, go))
    print(f"{args.job_id}: config stored" + (f", effective from {when.isoformat()}" if when else ""))
    return 0


def unknown_job(job_id: str, known: Iterable[str], table: str, where: str) -> ConfigError:
    """A job id with no row: most likely a typo, so name the closest known ids; --create is explicit."""
    import difflib

    ids = sorted(known)
    close = difflib.get_close_matches(job_id, ids, n=3, cutoff=0.6)
    if close:
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? "
    elif ids:
        hint = f"known job ids: {', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''}. "
    else:
        hint = "no job has a row yet. "
    return ConfigError(f"job {job_id!r} has no {table} row in {where}: {hint}"
                       f"Add --create to create one for this job id")
