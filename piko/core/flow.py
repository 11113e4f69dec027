"""A workflow run: its steps as pieces (core/fanout.py), started as their dependencies allow.

The workflow's fire is the parent run; each step is a piece in slot `W[step:S]`, so it runs
once per (workflow, scheduled time, step) across instances and restarts. A step gets
`ctx["upstream"]` (the results of the steps it runs after) and `ctx["workflow"]` (a dict the
steps share: what a step leaves in it is passed to the steps that start after it ends); its
stored result keeps both. A step that can never run is recorded UPSTREAM_FAILED.

A run taking over a workflow (its instance died, a retry, `piko workflow rerun`) starts from
the rows: steps done are kept with their results, steps running are awaited, steps that did
not succeed are run again with everything downstream of them; `rerun_from` names steps to run
again even though they succeeded (and everything downstream of them).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from piko.core import pieces
from piko.core.fanout import Fanout, ItemFailed, MapFailed, Piece, _Job
from piko.core.registry import JobSpec
from piko.core.types import RunClaim, RunOutcome, RunRecord, RunStatus
from piko.core.workflow import Dag, overall, ready

log = logging.getLogger("piko.runner")


class WorkflowFailed(MapFailed):
    """A workflow run whose steps did not all succeed."""


class Flow(_Job):
    def __init__(self, fanout: Fanout, ctx: dict[str, Any], spec: JobSpec, dag: Dag,
                 rerun_from: tuple[str, ...] = ()) -> None:
        super().__init__(fanout, ctx, spec, spec.job_id + pieces.OPEN + "step:", [], None, "collect", "step")
        self.dag = dag
        self.order = dag.order()
        self.index = {name: i for i, name in enumerate(self.order)}
        self.rerun_from = rerun_from
        self.status: dict[str, RunStatus] = {}  # steps ended (or decided UPSTREAM_FAILED)
        self.started: set[str] = set()
        self.shared: dict[str, Any] = {}  # ctx["workflow"]: what the steps leave for the ones after them
        self.values: dict[str, Any] = {}
        self.previous: dict[str, RunRecord] = {}  # a step's newest row, to run it again as its next attempt
        # at most 100 steps of one workflow run here at once (leader mode); queued ones are unbounded
        self.limit = max(1, len(self.order) if fanout.is_cluster else min(100, len(self.order)))

    async def run(self) -> list[Any]:  # type: ignore[override]
        unknown = [s for s in self.rerun_from if s not in self.dag.steps]
        if unknown:
            raise WorkflowFailed(f"workflow {self.spec.job_id}: no step named {', '.join(map(repr, unknown))} "
                                 f"(its steps: {', '.join(self.order)})")
        rows = {r.job_id: r for r in await self.f._store.pieces(self.prefix, self.at)}
        newest = {name: rows.get(pieces.step_slot(self.spec.job_id, name)) for name in self.order}
        not_done = {n for n, r in newest.items() if r is not None and r.status.is_final and r.status is not RunStatus.SUCCESS}
        redo = self.dag.downstream(set(self.rerun_from) | not_done)
        for name in self.order:  # dependencies first: the shared dict is rebuilt in the order steps ran
            rec = newest[name]
            if rec is None:
                continue
            if not rec.status.is_final:
                self.started.add(name)
                self.watched[rec.job_id] = self._piece(name)
            elif name in redo:
                self.previous[name] = rec
            else:
                self._accept(self._piece(name), rec.result)
        if self.status:
            log.info("workflow %s run %s: %d of %d step(s) already done, kept", self.spec.job_id,
                     self.ctx["run_id"], len(self.status), len(self.order))
        await self._advance()
        try:
            await self._loop()
        finally:
            for task in self.local:
                task.cancel()
            if self.local:
                await asyncio.wait(set(self.local))
        end = overall(self.status)
        if end is RunStatus.CANCELLED:
            raise asyncio.CancelledError(f"workflow {self.spec.job_id}: a step was cancelled")
        if end is not RunStatus.SUCCESS:
            failed = [f"{n} {s.value}" for n, s in self.status.items() if s is not RunStatus.SUCCESS]
            raise WorkflowFailed(f"workflow {self.spec.job_id}: {len(failed)} of {len(self.order)} step(s) did "
                                 f"not succeed: {', '.join(failed)}",
                                 [f for _, f in sorted(self.failures.items())])
        return [self.values.get(name) for name in self.order]

    def _finished(self) -> bool:
        return len(self.status) >= len(self.order)

    def _retries_of(self, piece: Piece) -> int:
        step = self.f._resolve(pieces.step_slot(self.spec.job_id, self.order[piece.index]))
        return int(step.retries or 0) if step is not None else 0

    def _piece(self, name: str) -> Piece:
        step = self.dag.steps[name]
        code = self.f._resolve(pieces.step_slot(self.spec.job_id, name))
        payload = json.dumps({"after": list(step.after),
                              "upstream": {d: self.values.get(d) for d in step.after},
                              "workflow": self.shared}, separators=(",", ":"), default=str)
        return Piece(pieces.step_slot(self.spec.job_id, name), self.index[name], payload,
                     code.queue if code is not None else self.spec.queue)

    def _accept(self, piece: Piece, result_json: str | None) -> None:
        name = self.order[piece.index]
        stored = pieces.decode(result_json) or {}
        self.values[name] = stored.get("v") if isinstance(stored, dict) else None
        if isinstance(stored, dict) and isinstance(stored.get("w"), dict):
            self.shared.update(stored["w"])
        self.results[piece.index] = self.values[name]
        self.status[name] = RunStatus.SUCCESS

    def _ended(self, piece: Piece, outcome: RunOutcome, rec: RunRecord | None = None) -> None:
        super()._ended(piece, outcome, rec)
        failure = self.failures.get(piece.index)
        if failure is not None:
            self.status[self.order[piece.index]] = RunStatus(failure.status)

    async def _place(self) -> None:
        await self._advance()
        await super()._place()

    async def _advance(self) -> None:
        """Start the steps whose dependencies allow it; record the ones that never can."""
        while True:
            start, blocked = ready(self.dag, self.status, self.started)
            for name in start:
                self.started.add(name)
                self.todo.append((self._piece(name), self.previous.get(name)))
            if not blocked:
                return
            await self._record_blocked(blocked)

    async def _record_blocked(self, names: list[str]) -> None:
        claims = []
        for name in names:
            step = self.dag.steps[name]
            bad = [f"{d} {self.status[d].value}" for d in step.after if self.status[d] is not RunStatus.SUCCESS]
            before = self.previous.get(name)
            claims.append(RunClaim(pieces.step_slot(self.spec.job_id, name), self.at, RunStatus.UPSTREAM_FAILED,
                                   self.f._clock.now(), self.f.instance_id, kind="piece",
                                   attempt=1 if before is None else before.attempt + 1, take_lock=before is None,
                                   rerun_if=frozenset() if before is None else frozenset({before.status}),
                                   error_type="UpstreamFailed", error_message=f"needs {', '.join(bad)}",
                                   parent_run_id=self.ctx["run_id"], payload=self._piece(name).payload))
            self.status[name] = RunStatus.UPSTREAM_FAILED
            self.failures[self.index[name]] = ItemFailed(self.index[name], None, RunStatus.UPSTREAM_FAILED.value,
                                                         "UpstreamFailed", f"needs {', '.join(bad)}")
        if self.f.is_cluster:
            await self.f._store.place_runs(claims)
        else:
            await self.f._store.claim_runs(claims)
        for name in names:
            self.f._counted(self.spec.job_id, "step", RunStatus.UPSTREAM_FAILED)
            log.warning("workflow %s at %s: step %s UPSTREAM_FAILED", self.spec.job_id, self.at.isoformat(), name)


async def run_workflow(fanout: Fanout, ctx: dict[str, Any], scheduled_time: Any, *, spec: JobSpec) -> list[Any]:
    """A workflow's fire: its handler (see attempts.py)."""
    rerun = ctx.get("rerun_from") or ()
    return await Flow(fanout, ctx, spec, spec.workflow, tuple(rerun)).run()
