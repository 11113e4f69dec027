"""`piko workflow show RUN_ID` and `piko workflow rerun RUN_ID [FILE] [--from STEP,...]`.

show: the workflow run and each step (dependencies first) with its status, attempts, duration
and error; the edges come from the steps' rows (each keeps what it runs after), or from the
jobs file when one is named (then steps not reached yet are listed too).
rerun: the failed steps (or the --from steps, done or not) and everything downstream run
again as the next attempt of the run's time; steps upstream keep their results. Run here with
the jobs file in leader mode (or --local), else queued for any worker; asking twice does not run
it twice (only the newest attempt of a time may be re-run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from piko.cli.args import bare_app, open_existing, target_app, with_store
from piko.cli.runs import _utc
from piko.core import pieces
from piko.core.types import RunRecord, RunStatus
from piko.errors import ConfigError, PikoError


def cmd_workflow(args: argparse.Namespace) -> int:
    return _show(args) if args.action == "show" else _rerun(args)


def _show(args: argparse.Namespace) -> int:
    app = target_app(args) if args.target else bare_app(args)
    open_existing(app, "ro")
    lines = asyncio.run(with_store(app, lambda s: workflow_lines(s, args.run_id, app.registry)))
    print("\n".join(lines))
    return 0


async def workflow_lines(store: Any, run_id: int, registry: Any) -> list[str]:
    run = await store.get_run(run_id)
    if run is None:
        raise PikoError(f"no run with id {run_id} in {store.description}")
    rows = await store.pieces(run.job_id + pieces.OPEN + "step:", run.scheduled_at)
    if not rows and (registry.get(run.job_id) is None or registry.get(run.job_id).workflow is None):
        raise ConfigError(f"run {run_id} ({run.job_id}) has no workflow steps recorded")
    attempts = [r for r in reversed(await store.recent_runs(run.job_id, 1000)) if r.scheduled_at == run.scheduled_at]
    newest = attempts[-1] if attempts else run
    lines = [f"workflow {run.job_id} at {_utc(run.scheduled_at)}: {newest.status.value} "
             f"(run {newest.run_id}, attempt {newest.attempt} of this time)"]
    if newest.error_type:
        lines.append(f"  {newest.error_type}: {newest.error_message}")
    by_step: dict[str, RunRecord] = {r.job_id[len(run.job_id) + 6:-1]: r for r in rows}
    tries = {step: r.attempt for step, r in by_step.items()}
    edges = {step: list((pieces.decode(r.payload) or {}).get("after", [])) for step, r in by_step.items()}
    spec = registry.get(run.job_id)
    if spec is not None and spec.workflow is not None:
        edges = {name: list(step.after) for name, step in spec.workflow.steps.items()}
    for step in _order(edges):
        r = by_step.get(step)
        after = f"  after {', '.join(edges[step])}" if edges.get(step) else ""
        if r is None:
            lines.append(f"  {step:<20} {'(not started)':<16}{after}")
            continue
        secs = f"{r.duration_s:.3f}s" if r.duration_s is not None else "-"
        more = f" attempt {tries[step]}" if tries[step] > 1 else ""
        err = f"  {r.error_type}: {(r.error_message or '')[:80]}" if r.error_type else ""
        lines.append(f"  {step:<20} {r.status.value:<16}{secs:>9}{more}  run {r.run_id}{after}{err}")
    return lines


def _order(edges: dict[str, list[str]]) -> list[str]:
    done: list[str] = []

    def visit(name: str, depth: int = 0) -> None:
        if name in done or depth > len(edges):
            return
        for dep in edges.get(name, []):
            if dep in edges:
                visit(dep, depth + 1)
        if name not in done:
            done.append(name)

    for name in edges:
        visit(name)
    return done


def _rerun(args: argparse.Namespace) -> int:
    steps = tuple(s.strip() for s in (args.from_steps or "").split(",") if s.strip())
    app = target_app(args) if args.target else bare_app(args)
    open_existing(app, "rw")
    is_queued = args.target is None or (app.settings.execution == "cluster" and not args.local)
    if args.target is None and app.settings.execution != "cluster":
        raise ConfigError("piko workflow rerun: in leader mode the run is re-run here: name the jobs file "
                          "(piko workflow rerun RUN_ID FILE)")

    async def go() -> Any:
        try:
            if is_queued and args.target is None:
                return await _queue_without_code(app, args.run_id, steps)
            runner = await app.manual_runner()
            outcome = await runner.rerun_workflow(args.run_id, steps, is_queued=is_queued)
            if is_queued and outcome.run_id is not None and not args.no_wait:
                print(f"run {outcome.run_id} of {outcome.job_id}: queued for a worker; waiting for its end "
                      f"(Ctrl+C stops waiting, not the run)", file=sys.stderr)
                return await runner.wait_run(outcome.run_id)
            return outcome
        finally:
            await app.stop()

    outcome = asyncio.run(go())
    print(f"run {outcome.run_id} of {outcome.job_id}: {outcome.status.value}"
          + (f" ({outcome.error_type}: {outcome.error_message})" if outcome.error_type else ""))
    return 0 if outcome.status in (RunStatus.SUCCESS, RunStatus.PENDING) else 1


async def _queue_without_code(app: Any, run_id: int, steps: tuple[str, ...]) -> Any:
    """Cluster execution, no jobs file: the re-run is queued as is; a worker that has the code runs
    it (and fails it, saying so, if a --from step does not exist)."""
    from piko.core.types import RunClaim, RunOutcome

    store = app.store
    await store.open()
    run = await store.get_run(run_id)
    if run is None:
        raise PikoError(f"no run with id {run_id} in {store.description}")
    newest = await store.latest_run(run.job_id, run.scheduled_at)
    if newest is not None and newest.run_id != run.run_id:
        raise PikoError(f"run {run_id} is not the newest attempt of {run.job_id} at "
                        f"{run.scheduled_at.isoformat()}: run {newest.run_id} ({newest.status.value}) is")
    if not run.status.is_final or (run.status is RunStatus.SUCCESS and not steps):
        raise PikoError(f"run {run_id} is {run.status.value}: re-run a failed workflow run, or name the steps "
                        f"to run again with --from")
    claim = RunClaim(run.job_id, run.scheduled_at, RunStatus.PENDING, app.clock.now(), "cli", attempt=run.attempt + 1,
                     kind="manual", take_lock=False, rerun_if=frozenset({run.status}), queue=run.queue,
                     data_start=run.data_start, data_end=run.data_end,
                     payload=json.dumps({"from": list(steps)}) if steps else None)
    ((new_id, status),) = await store.place_runs([claim])
    if new_id is None:
        return RunOutcome(None, run.job_id, run.scheduled_at, RunStatus.SKIPPED, "Duplicate", "it was re-run already")
    return RunOutcome(new_id, run.job_id, run.scheduled_at, status, "Queued", "queued for a worker")
