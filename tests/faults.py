"""Faults around a real store: refuse or hold chosen calls, and record the calls it answered.

A test that needs a store to fail, hang or tell what it was asked wraps one (a MemoryStore on
a FakeClock, or an opened SQLite or MySQL store) instead of writing a second store: what the
calls mean (lease terms, run locks, status guards) comes from the contract-tested
implementation. Every attribute that is not a coroutine method passes straight through
(`faulty.t` is the memory store's tables).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter, defaultdict
from typing import Any


class FaultyStore:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()  # every call made, answered or not
        self.answered: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)  # args of calls that returned
        self._errors: dict[str, BaseException] = {}
        self._lost: dict[str, BaseException] = {}  # the call is made, then its answer is lost
        self._gates: dict[str, asyncio.Event] = {}

    def fail(self, method: str, error: BaseException) -> None:
        """Calls of `method` raise `error` until heal()."""
        self._errors[method] = error

    def lose_answers(self, method: str, error: BaseException) -> None:
        """Calls of `method` reach the store and take effect, then raise `error` (a server that
        committed and went away before it answered) until heal()."""
        self._lost[method] = error

    def heal(self, method: str) -> None:
        self._errors.pop(method, None)
        self._lost.pop(method, None)

    def hold(self, method: str) -> asyncio.Event:
        """Calls of `method` wait before reaching the store until release() (a stalled process or a
        locked database); the event is set by release()."""
        return self._gates.setdefault(method, asyncio.Event())

    def release(self, method: str) -> None:
        gate = self._gates.pop(method, None)
        if gate is not None:
            gate.set()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.store, name)
        if not inspect.iscoroutinefunction(found):
            return found

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            gate = self._gates.get(name)
            if gate is not None:
                await gate.wait()
            error = self._errors.get(name)
            if error is not None:
                raise error
            result = await found(*args, **kwargs)
            lost = self._lost.get(name)
            if lost is not None:
                raise lost
            self.answered[name].append(args)
            return result

        return call
