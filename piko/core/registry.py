"""Job specs and the @job decorator: the code-side whitelist of what may run.

A job is an `async def handler(ctx, scheduled_time, **resources)`. Registration rejects
what can never run (a plain function, a duplicate id, two schedules, a malformed default
schedule) at import time, with the job id and the reason. `job` and `default_registry` keep
the older import path `from piko.core.registry import job` working.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from piko.core.pieces import is_piece, spec_name
from piko.core.types import BackfillPolicy, ScheduleRow
from piko.errors import RegistrationError, TriggerSpecError

if TYPE_CHECKING:
    from piko.core.workflow import Workflow

Handler = Callable[..., Awaitable[Any]]
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NO_RESOURCES: Mapping[str, Any] = MappingProxyType({})  # shared by every job that injects none


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One registered job (slotted: an app keeps one per job for its lifetime)."""

    job_id: str
    func: Handler
    schema: Any = None
    stateful: bool = False
    backfill_policy: BackfillPolicy = BackfillPolicy.SKIP
    resources: Mapping[str, Any] = field(default_factory=lambda: NO_RESOURCES)
    schedule_type: str | None = None  # the default schedule declared in code, if any
    schedule_spec: Any = None
    timezone: str | None = None
    misfire_grace_time: float | None = None
    coalesce: bool | None = None
    max_instances: int | None = None
    timeout: float | None = None
    retries: int | None = None
    retry_backoff: float | None = None
    queue: str = "default"  # cluster execution: only workers of this queue take its runs
    shards: int | None = None  # each fire runs as this many shard pieces (a schedule row may override)
    broadcast: bool = False  # each fire runs once on every live instance serving its queue
    is_task: bool = False  # a map task (app.task): called as handler(ctx, item), never scheduled
    workflow: Any = None  # a workflow's steps (core/workflow.Dag): its fire runs them, not `func`
    step_of: str | None = None  # a workflow step: the workflow's name

    def default_schedule_row(self) -> ScheduleRow | None:
        """The row inserted when the database has none for this job yet."""
        if self.schedule_type is None:
            return None
        spec = self.schedule_spec
        expr = spec if isinstance(spec, str) else json.dumps(spec, default=str, sort_keys=True)
        return ScheduleRow(job_id=self.job_id, schedule_type=self.schedule_type, schedule_expr=expr,
                           timezone=self.timezone)


def _is_async_callable(func: Any) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - async callable objects are fine too
    return call is not None and inspect.iscoroutinefunction(call) and not inspect.isclass(func)


def _check_number(job_id: str, name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    if value is None:
        return
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or value != value or value < minimum:
        kind = "an integer" if integer else "a number"
        raise RegistrationError(f"job {job_id!r}: {name}={value!r} must be {kind} >= {minimum}")


def _check_pieces(job_id: str, options: dict[str, Any]) -> None:
    """shards= and broadcast= (normalized in place)."""
    _check_number(job_id, "shards", options.get("shards"), minimum=1, integer=True)
    if (options.get("shards") or 0) > MAX_SHARDS:
        raise RegistrationError(f"job {job_id!r}: shards={options['shards']} is over {MAX_SHARDS} "
                                f"(use ctx.map for many pieces)")
    if options.get("broadcast") not in (None, False, True):
        raise RegistrationError(f"job {job_id!r}: broadcast={options['broadcast']!r} must be True or False")
    options["broadcast"] = bool(options.get("broadcast"))
    if options["broadcast"] and options.get("shards"):
        raise RegistrationError(f"job {job_id!r}: give broadcast=True or shards=N, not both")


_OPTIONS = frozenset({"schema", "stateful", "backfill_policy", "resources", "cron", "interval", "date", "timezone",
                      "misfire_grace_time", "coalesce", "max_instances", "timeout", "retries", "retry_backoff", "queue",
                      "shards", "broadcast"})
_TASK_OPTIONS = frozenset({"resources", "timeout", "retries", "retry_backoff", "queue"})
MAX_SHARDS = 1000


def build_spec(job_id: str, func: Any, **options: Any) -> JobSpec:
    """Validate one registration; raise RegistrationError / TriggerSpecError with the job id."""
    if not isinstance(job_id, str) or not job_id.strip() or len(job_id) > 191:
        raise RegistrationError(f"job id {job_id!r} must be a non-empty string of at most 191 characters")
    if "[" in job_id:
        raise RegistrationError(f"job id {job_id!r} must not contain '[' (it marks the pieces of a fire: "
                                f"'job[3/8]' is shard 3 of 8)")
    if not _is_async_callable(func):
        name = getattr(func, "__qualname__", repr(func))
        raise RegistrationError(f"job {job_id!r}: handler {name} must be an 'async def' function "
                                f"(called as handler(ctx, scheduled_time, **resources))")
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise RegistrationError(f"job {job_id!r}: unknown option(s) {', '.join(unknown)}; "
                                f"allowed: {', '.join(sorted(_OPTIONS))}")
    schedules = {k: options.pop(k) for k in ("cron", "interval", "date") if options.get(k) is not None}
    for k in ("cron", "interval", "date"):
        options.pop(k, None)
    if len(schedules) > 1:
        raise RegistrationError(f"job {job_id!r}: give at most one of cron=, interval=, date= "
                                f"(got {', '.join(sorted(schedules))})")
    _check_number(job_id, "misfire_grace_time", options.get("misfire_grace_time"), minimum=0)
    _check_number(job_id, "timeout", options.get("timeout"), minimum=0)
    _check_number(job_id, "max_instances", options.get("max_instances"), minimum=1, integer=True)
    _check_number(job_id, "retries", options.get("retries"), minimum=0, integer=True)
    _check_number(job_id, "retry_backoff", options.get("retry_backoff"), minimum=0)
    _check_pieces(job_id, options)
    queue = options.get("queue", "default")
    if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
        raise RegistrationError(f"job {job_id!r}: queue={queue!r} must be 1-64 letters, digits, '_', '-' or '.'")
    policy = options.get("backfill_policy", BackfillPolicy.SKIP)
    try:
        options["backfill_policy"] = BackfillPolicy(policy)
    except ValueError:
        raise RegistrationError(f"job {job_id!r}: backfill_policy={policy!r} must be BackfillPolicy.SKIP "
                                f"or BackfillPolicy.CATCH_UP") from None
    resources = options.get("resources") or {}
    if not isinstance(resources, Mapping) or not all(isinstance(k, str) for k in resources):
        raise RegistrationError(f"job {job_id!r}: resources= must be a dict of name -> resource")
    options["resources"] = dict(resources) if resources else NO_RESOURCES
    kind, spec = next(iter(schedules.items()), (None, None))  # type: tuple[str | None, Any]
    spec_obj = JobSpec(job_id=job_id, func=func, schedule_type=kind, schedule_spec=spec, **options)
    if kind is not None:
        _check_schedule(job_id, kind, spec, spec_obj.timezone or "UTC")
    return spec_obj


def _check_schedule(job_id: str, kind: str, spec: Any, tz: str) -> None:
    """The schedule builds a trigger (TriggerSpecError naming the job if not); a spec seen valid
    before is not built again (apps register thousands alike)."""
    from piko.triggers import make_trigger

    try:
        # a dict as its items, with their types: 1, 1.0 and True are equal keys, but a check may
        # accept one and refuse another
        key = ("dict", tuple(sorted((k, type(v), v) for k, v in spec.items()))) if isinstance(spec, dict) \
            else ("value", type(spec), spec)
        hash(key)
    except TypeError:  # a value that cannot be a key (a list): checked every time
        key = None
    try:
        if key is None:
            make_trigger(kind, spec, tz=tz)
        else:
            _checked(kind, key, tz)
    except TriggerSpecError as exc:
        raise TriggerSpecError(exc.spec, f"job {job_id!r}: {exc.reason}", exc.field) from None


@functools.lru_cache(maxsize=4096)  # only valid ones are kept: a refused spec raises, and is checked again
def _checked(kind: str, key: tuple[Any, ...], tz: str) -> None:
    from piko.triggers import make_trigger

    spec = {k: v for k, _, v in key[1]} if key[0] == "dict" else key[2]
    make_trigger(kind, spec, tz=tz)


def build_task(task_id: str, func: Any, **options: Any) -> JobSpec:
    """A map task (`ctx.map(task_id, items)` runs it once per item): never scheduled, called as
    handler(ctx, item, **resources); options are those of a run: resources, timeout, retries, queue."""
    unknown = sorted(set(options) - _TASK_OPTIONS)
    if unknown:
        raise RegistrationError(f"task {task_id!r}: unknown option(s) {', '.join(unknown)}; "
                                f"allowed: {', '.join(sorted(_TASK_OPTIONS))}")
    if _is_async_callable(func) is False:
        name = getattr(func, "__qualname__", repr(func))
        raise RegistrationError(f"task {task_id!r}: handler {name} must be an 'async def' function "
                                f"(called as handler(ctx, item, **resources))")
    spec = build_spec(task_id, func, **options)
    return replace(spec, is_task=True)


class Registry:
    """The jobs one app knows, by id."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobSpec] = {}

    def add(self, spec: JobSpec) -> JobSpec:
        if type(spec.job_id) is str:  # one string per job id: stored rows read back share it (store/sql.py)
            sys.intern(spec.job_id)
        existing = self._jobs.get(spec.job_id)
        if existing is not None and existing.func is not spec.func:
            where = getattr(existing.func, "__module__", "?") + "." + getattr(existing.func, "__qualname__", "?")
            raise RegistrationError(f"job id {spec.job_id!r} is already registered (by {where}); job ids must be unique")
        self._jobs[spec.job_id] = spec
        return spec

    def job(self, job_id: str, **options: Any) -> Callable[[Handler], Handler]:
        def decorate(func: Handler) -> Handler:
            self.add(build_spec(job_id, func, **options))
            return func

        return decorate

    def task(self, task_id: str, **options: Any) -> Callable[[Handler], Handler]:
        def decorate(func: Handler) -> Handler:
            self.add(build_task(task_id, func, **options))
            return func

        return decorate

    def get(self, job_id: str) -> JobSpec | None:
        return self._jobs.get(job_id)

    def resolve(self, job_id: str) -> JobSpec | None:
        """The spec a run of `job_id` runs with: a job's own, or for a piece slot (core/pieces.py) its
        job's or task's, named after the slot, with nothing of the fire's (schedule, window, shards)."""
        spec = self._jobs.get(job_id)
        if spec is not None or not is_piece(job_id):
            return spec
        handler = self._jobs.get(spec_name(job_id))
        if handler is None:
            return None
        return replace(handler, job_id=job_id, stateful=False, schedule_type=None, schedule_spec=None,
                       shards=None, broadcast=False, workflow=None)

    def workflow(self, name: str, **options: Any) -> Workflow:
        """A workflow: a job (schedule and options as @job's) whose fire runs its steps as a DAG."""
        from piko.core.workflow import Workflow

        async def run_steps(ctx: Any, scheduled_time: Any) -> None:  # never called: its fire runs the steps
            raise RegistrationError(f"workflow {name!r} ran without its steps")

        wf = Workflow(name, lambda step, func, opts: self._add_step(name, step, func, opts))
        options.setdefault("retries", 2)  # a run whose instance died is taken over (a FAILED one is not retried)
        self.add(replace(build_spec(name, run_steps, **options), workflow=wf.dag))
        return wf

    def _add_step(self, workflow: str, step: str, func: Any, options: dict[str, Any]) -> None:
        spec = build_spec(f"{workflow}.{step}", func, **options)
        self.add(replace(spec, step_of=workflow))

    def check(self) -> None:
        """RegistrationError for what can only be judged once every job is declared (workflows)."""
        for spec in self._jobs.values():
            if spec.workflow is not None:
                spec.workflow.check_complete()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[JobSpec]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)


default_registry = Registry()


def job(job_id: str, **options: Any) -> Callable[[Handler], Handler]:
    """Register a job on the default registry (the API of earlier piko releases)."""
    return default_registry.job(job_id, **options)
