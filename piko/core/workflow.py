"""Workflows declared in code: steps, their dependencies, and what may run next. Pure.

A workflow is a job whose fire runs a DAG of steps (core/fanout.py drives it): a step becomes
a run when its dependencies are settled as its trigger rule wants: `all_success` (default)
when all of them succeeded, `all_done` (clean-up) when all of them ended, however. A step
whose rule can no longer be met is UPSTREAM_FAILED. Declaration errors are refused with the
names: a duplicate step or a cycle by the decorator that makes it, a dependency that no step
has once the jobs file is imported (the app checks when it is built from the file and when it
starts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from piko.core.types import RunStatus
from piko.errors import RegistrationError

TRIGGER_RULES = ("all_success", "all_done")
_STEP_OPTIONS = frozenset({"after", "retries", "timeout", "resources", "trigger_rule", "queue", "retry_backoff"})


@dataclass(frozen=True)
class Step:
    name: str
    after: tuple[str, ...] = ()
    trigger_rule: str = "all_success"


@dataclass
class Dag:
    """The steps of one workflow, in declaration order."""

    workflow: str
    steps: dict[str, Step] = field(default_factory=dict)

    def add(self, name: str, after: Iterable[str], trigger_rule: str) -> Step:
        if not isinstance(name, str) or not name.strip() or any(c in name for c in "[]:#@"):
            raise RegistrationError(f"workflow {self.workflow!r}: step name {name!r} must be a non-empty string "
                                    f"without '[', ']', ':', '#' or '@'")
        if name in self.steps:
            raise RegistrationError(f"workflow {self.workflow!r}: step {name!r} is declared twice")
        if trigger_rule not in TRIGGER_RULES:
            raise RegistrationError(f"workflow {self.workflow!r}: step {name!r}: trigger_rule={trigger_rule!r} "
                                    f"must be one of {', '.join(TRIGGER_RULES)}")
        deps = (after,) if isinstance(after, str) else tuple(after)
        step = self.steps[name] = Step(name, deps, trigger_rule)
        try:  # a cycle is refused by the step that closes it; a name not declared yet may come later
            check_acyclic(self.workflow, {s.name: s.after for s in self.steps.values()})
        except RegistrationError:
            del self.steps[name]
            raise
        return step

    def check_complete(self) -> None:
        """RegistrationError naming a dependency no step of the workflow has (once all are declared)."""
        for step in self.steps.values():
            unknown = [d for d in step.after if d not in self.steps]
            if unknown:
                raise RegistrationError(f"workflow {self.workflow!r}: step {step.name!r} runs after unknown step(s) "
                                        f"{', '.join(map(repr, unknown))} (its steps: {', '.join(self.steps)})")
        if not self.steps:
            raise RegistrationError(f"workflow {self.workflow!r} has no steps (add them with @wf.step(name))")

    def order(self) -> list[str]:
        """The steps in a topological order (dependencies first, else declaration order)."""
        done: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen or name not in self.steps:
                return
            seen.add(name)
            for dep in self.steps[name].after:
                visit(dep)
            done.append(name)

        for name in self.steps:
            visit(name)
        return done

    def downstream(self, names: Iterable[str]) -> set[str]:
        """The named steps and every step that depends on them, directly or not."""
        out = set(names)
        for name in self.order():
            if any(d in out for d in self.steps[name].after):
                out.add(name)
        return out


def check_acyclic(workflow: str, edges: Mapping[str, Iterable[str]]) -> None:
    """RegistrationError naming a cycle in `edges` (step -> the steps it runs after), if any."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in edges.get(node, ()):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise RegistrationError(f"workflow {workflow!r}: steps form a cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node)


def ready(dag: Dag, status: Mapping[str, RunStatus], started: set[str]) -> tuple[list[str], list[str]]:
    """(steps to start now, steps that can never run: UPSTREAM_FAILED), from the steps' statuses
    (ended steps only) and the steps started or decided already."""
    start, blocked = [], []
    for step in dag.steps.values():
        if step.name in started or step.name in status:
            continue
        ends = [status.get(d) for d in step.after]
        if any(e is None for e in ends):
            continue  # a dependency has not ended yet
        if step.trigger_rule == "all_done" or all(e is RunStatus.SUCCESS for e in ends):
            start.append(step.name)
        else:
            blocked.append(step.name)
    return start, blocked


def overall(status: Mapping[str, RunStatus]) -> RunStatus:
    """The workflow run's end from its steps' ends: SUCCESS only if every step succeeded."""
    if all(s is RunStatus.SUCCESS for s in status.values()):
        return RunStatus.SUCCESS
    if any(s is RunStatus.CANCELLED for s in status.values()) and not any(
            s in (RunStatus.FAILED, RunStatus.TIMEOUT) for s in status.values()):
        return RunStatus.CANCELLED
    return RunStatus.FAILED


class Workflow:
    """What `app.workflow(...)` returns: `@wf.step(name, after=[...])` registers a step."""

    def __init__(self, name: str, register_step: Callable[[str, Any, dict[str, Any]], None]) -> None:
        self.name = name
        self.dag = Dag(name)
        self._register_step = register_step

    def step(self, name: str, **options: Any) -> Callable[[Any], Any]:
        unknown = sorted(set(options) - _STEP_OPTIONS)
        if unknown:
            raise RegistrationError(f"workflow {self.name!r}: step {name!r}: unknown option(s) {', '.join(unknown)}; "
                                    f"allowed: {', '.join(sorted(_STEP_OPTIONS))}")

        def decorate(func: Any) -> Any:
            after = options.pop("after", ())
            rule = options.pop("trigger_rule", "all_success")
            self.dag.add(name, after or (), rule)
            try:
                self._register_step(name, func, options)
            except RegistrationError:
                del self.dag.steps[name]
                raise
            return func

        return decorate

    def __repr__(self) -> str:
        return f"<Workflow {self.name} steps={list(self.dag.steps)}>"
