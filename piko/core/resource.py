"""Dependency injection: resources are entered on an AsyncExitStack around each run.

A resource is declared by class (`Resource` subclass or a class marked `@resource`) or by a
factory `f(ctx)`. A class is instantiated once per app and shared by every run (so a pool
in its __init__ is one pool); each run calls `acquire(ctx)` and may get back an async context
manager, an async generator (decorated or not), or an awaitable. Exit order is the reverse
of entry, on success, failure and cancellation alike.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from piko.errors import ConfigError

log = logging.getLogger("piko.resources")


class Resource:
    """Base class for injectable resources: override `acquire(ctx)`."""

    def acquire(self, ctx: Mapping[str, Any]) -> Any:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__}.acquire(ctx) is not implemented")


def resource(cls: type) -> type:
    """Mark a class as a resource (it must define `acquire(self, ctx)`)."""
    if not callable(getattr(cls, "acquire", None)):
        raise ConfigError(f"@resource class {cls.__qualname__} must define acquire(self, ctx)")
    cls.__piko_resource__ = True  # type: ignore[attr-defined]
    return cls


@asynccontextmanager
async def _from_awaitable(value: Any) -> AsyncIterator[Any]:
    """An `async def acquire` returns the value itself, or an async context manager to enter."""
    obtained = await value
    if hasattr(obtained, "__aenter__") and hasattr(obtained, "__aexit__") or inspect.isasyncgen(obtained):
        async with as_context_manager(obtained, "") as entered:
            yield entered
    else:
        yield obtained


def as_context_manager(obtained: Any, name: str) -> AbstractAsyncContextManager[Any]:
    if hasattr(obtained, "__aenter__") and hasattr(obtained, "__aexit__"):
        return obtained  # type: ignore[no-any-return]
    if inspect.isasyncgen(obtained):
        return asynccontextmanager(lambda: obtained)()  # an async generator, entered once
    if inspect.isawaitable(obtained):
        return _from_awaitable(obtained)
    raise ConfigError(f"resource {name!r}: acquire(ctx) returned {type(obtained).__name__}; return an async "
                      f"context manager or yield from an async generator")


class ResourcePool:
    """One instance per declared resource class, shared by every run of the app."""

    def __init__(self) -> None:
        self._instances: dict[Any, Any] = {}

    def _instance(self, decl: Any) -> Any:
        if inspect.isclass(decl):
            if decl not in self._instances:
                self._instances[decl] = decl()
            return self._instances[decl]
        return decl

    def open(self, decl: Any, name: str, ctx: Mapping[str, Any]) -> AbstractAsyncContextManager[Any]:
        target = self._instance(decl)
        acquire = getattr(target, "acquire", None)
        if callable(acquire):
            return as_context_manager(acquire(ctx), name)
        if callable(target):
            return as_context_manager(target(ctx), name)
        raise ConfigError(f"resource {name!r}: {target!r} is neither a Resource nor a factory f(ctx)")

    async def enter_all(self, stack: AsyncExitStack, decls: Mapping[str, Any],
                        ctx: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, decl in decls.items():
            values[name] = await stack.enter_async_context(self.open(decl, name, ctx))
        return values

    async def aclose(self, budget_s: float | None = None) -> None:
        """Close shared instances that know how (aclose()/close()), newest first, within
        `budget_s` in all: one that raises or hangs is logged and the others are still closed."""
        loop = asyncio.get_running_loop()
        deadline = None if budget_s is None else loop.time() + budget_s
        instances = list(reversed(list(self._instances.values())))
        self._instances.clear()
        for inst in instances:
            closer = getattr(inst, "aclose", None) or getattr(inst, "close", None)
            if not callable(closer):
                continue
            try:
                result = closer()
                if inspect.isawaitable(result):
                    left = None if deadline is None else max(0.0, deadline - loop.time())
                    await asyncio.wait_for(result, left)
            except asyncio.TimeoutError:
                log.error("resource %s: closing it took longer than the shutdown budget; left open",
                          type(inst).__name__)
            except Exception:
                log.exception("resource %s: closing it failed", type(inst).__name__)
