"""`piko runs`: recent runs, newest first, filtered by job, status and kind; one run in full
(--show); or one run's tree of attempts and pieces (RUN_ID --tree).

Filters are checked here (a bad value is exit status 2 naming the choices) and applied in SQL
by the store, so --limit counts matching runs. `--show RUN_ID` prints every field of one run,
its data window and the traceback stored for it. Opens the database read-only.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timezone
from typing import Any

from piko.cli.args import bare_app, open_existing, with_store
from piko.core.types import RUN_KINDS, RunRecord, RunStatus
from piko.errors import ConfigError, PikoError

UTC = timezone.utc
KIND_ALIASES = {"scheduled": "schedule"}  # how people say it; the column holds "schedule"


def cmd_runs(args: argparse.Namespace) -> int:
    status, kind = run_status(args.status), run_kind(args.kind)
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.show is not None and (args.job_id or status or kind):
        raise ConfigError("--show RUN_ID shows one run: leave out JOB, --status and --kind")
    if args.tree:
        return _tree(args, status, kind)
    app = bare_app(args)
    open_existing(app, "ro")
    if args.show is not None:
        run = asyncio.run(with_store(app, lambda s: s.get_run(args.show)))
        if run is None:
            raise PikoError(f"no run with id {args.show} in {app.store.description}")
        print(run_detail(run))
        return 0
    runs = asyncio.run(with_store(app, lambda s: s.recent_runs(args.job_id, args.limit, status=status, kind=kind)))
    print(f"{'run_id':>7} {'job_id':<24} {'scheduled (UTC)':<26} {'status':<10} {'kind':<8} {'att':>3} "
          f"{'secs':>8}  error")
    for r in runs:
        secs = f"{r.duration_s:.3f}" if r.duration_s is not None else "-"
        err = f"{r.error_type}: {r.error_message}" if r.error_type else ""
        print(f"{r.run_id:>7} {r.job_id[:24]:<24} {_utc(r.scheduled_at):<26} {r.status.value:<10} {r.kind[:8]:<8} "
              f"{r.attempt:>3} {secs:>8}  {err[:100]}")
    if not runs:
        filtered = args.job_id or status or kind
        print("(no run matches)" if filtered else "(no runs recorded yet)")
    return 0


def _tree(args: argparse.Namespace, status: RunStatus | None, kind: str | None) -> int:
    if args.show is not None or status or kind:
        raise ConfigError("--tree RUN_ID shows one run's tree: leave out --show, --status and --kind")
    try:
        run_id = int(args.job_id or "")
    except ValueError:
        raise ConfigError(f"--tree needs a RUN_ID (a number) in place of JOB, got {args.job_id!r}") from None
    app = bare_app(args)
    open_existing(app, "ro")
    lines = asyncio.run(with_store(app, lambda s: run_tree(s, run_id, args.limit)))
    if lines is None:
        raise PikoError(f"no run with id {run_id} in {app.store.description}")
    print("\n".join(lines))
    return 0


async def run_tree(store: Any, run_id: int, limit: int) -> list[str] | None:
    """The run's slot (every attempt), then the pieces its attempts made (pieces of pieces below
    them, 3 levels): each piece's newest row, how many attempts it took, a count per status."""
    run = await store.get_run(run_id)
    if run is None:
        return None
    attempts = [r for r in reversed(await store.recent_runs(run.job_id, 1000)) if r.scheduled_at == run.scheduled_at]
    attempts = attempts or [run]
    return [_tree_line(r) for r in attempts] + await _pieces_lines(store, [r.run_id for r in attempts], limit, 1)


async def _pieces_lines(store: Any, parent_ids: list[int], limit: int, depth: int) -> list[str]:
    kids = await store.children(parent_ids)
    if not kids:
        return []
    newest: dict[str, RunRecord] = {}
    ids: dict[str, list[int]] = {}
    for kid in kids:  # in run id order: the last one of a slot is its newest
        newest[kid.job_id] = kid
        ids.setdefault(kid.job_id, []).append(kid.run_id)
    counts: dict[str, int] = {}
    for kid in newest.values():
        counts[kid.status.value] = counts.get(kid.status.value, 0) + 1
    pad = "  " * depth
    lines = [f"{pad}pieces: {len(newest)} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"]
    for shown, kid in enumerate(newest.values()):
        if shown >= limit:
            lines.append(f"{pad}... and {len(newest) - limit} more (--limit N shows more)")
            break
        more = f"  ({len(ids[kid.job_id])} attempts)" if len(ids[kid.job_id]) > 1 else ""
        lines.append(f"{pad}{_tree_line(kid)}{more}")
        if depth < 3:
            lines += await _pieces_lines(store, ids[kid.job_id], limit, depth + 1)
    return lines


def _tree_line(r: RunRecord) -> str:
    secs = f"{r.duration_s:.3f}s" if r.duration_s is not None else "-"
    err = f"  {r.error_type}: {(r.error_message or '')[:80]}" if r.error_type else ""
    return (f"run {r.run_id} {r.job_id} {_utc(r.scheduled_at)} {r.status.value} attempt {r.attempt} {secs} "
            f"{r.instance_id or '-'}{err}")


def run_status(text: str | None) -> RunStatus | None:
    """--status, any case; a value that is no RunStatus names the ones there are."""
    if text is None:
        return None
    try:
        return RunStatus(text.strip().upper())
    except ValueError:
        raise ConfigError(f"--status {text!r} is not a run status; use one of "
                          f"{', '.join(s.value for s in RunStatus)}") from None


def run_kind(text: str | None) -> str | None:
    """--kind, any case; 'scheduled' means 'schedule'."""
    if text is None:
        return None
    kind = KIND_ALIASES.get(text.strip().lower(), text.strip().lower())
    if kind not in RUN_KINDS:
        raise ConfigError(f"--kind {text!r} is not a run kind; use one of {', '.join(RUN_KINDS)}")
    return kind


def run_detail(r: RunRecord) -> str:
    """Every field of one run, one per line, then its stored traceback."""
    window = f"[{_iso(r.data_start)}, {_iso(r.data_end)})" if r.data_start or r.data_end else "-"
    fields: list[tuple[str, Any]] = [
        ("run_id", r.run_id), ("job_id", r.job_id), ("status", r.status.value), ("kind", r.kind),
        ("attempt", r.attempt), ("scheduled", _iso(r.scheduled_at)), ("data window", window),
        ("started", _iso(r.started_at)), ("finished", _iso(r.finished_at)),
        ("duration", f"{r.duration_s:.3f} s" if r.duration_s is not None else "-"),
        ("instance", r.instance_id), ("error", f"{r.error_type}: {r.error_message}" if r.error_type else "-")]
    lines = [f"{name + ':':<13}{value}" for name, value in fields]
    if r.error_traceback:
        lines += ["traceback:", *("  " + line for line in r.error_traceback.rstrip().splitlines())]
    elif r.status in (RunStatus.FAILED, RunStatus.TIMEOUT):
        lines.append("traceback:   (none stored)")
    return "\n".join(lines)


def _iso(when: datetime | None) -> str:
    return when.astimezone(UTC).isoformat() if when is not None else "-"


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]  # one width for every row
