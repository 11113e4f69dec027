"""Sink base classes: ResultSink (write a batch of intents) and TypedSink (route by type).

A sink writes a whole batch or raises; the writer retries, isolates poison intents and
spills. To fail only some intents of a batch, a sink writes the others and raises
RejectedIntents naming the failed ones: those go to the dead-letter file at once, the
rest count as written. TypedSink does exactly that for a payload type no `@on` handler
takes (routing follows the payload type's MRO, so `@on(Base)` also takes subclasses).
`payload_types` are the dataclass/model types rebuilt when spilled intents are replayed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from piko.errors import ConfigError, PikoError
from piko.persistence.codec import is_model_type, type_name
from piko.persistence.intent import WriteIntent

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_ON_ATTR = "__piko_on_types__"


class RejectedIntents(PikoError):
    """Some intents of a batch can never be written; the others were written."""

    def __init__(self, rejected: Sequence[tuple[WriteIntent, BaseException]]) -> None:
        self.rejected = list(rejected)
        first = self.rejected[0][1] if self.rejected else None
        super().__init__(f"{len(self.rejected)} intent(s) rejected by the sink; first: {first!r}")


class UnroutablePayload(PikoError, TypeError):
    """A TypedSink has no @on handler for a payload's type."""


class ResultSink:
    """Base class of sinks: subclasses set a name and implement `write_batch`.

    `open()` and `close()` are called by the writer's start and stop; override them to
    hold a connection or a file. Writes to one sink never run concurrently.
    """

    payload_types: tuple[type, ...] = ()

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a sink needs a non-empty str name, got {name!r}")
        self.name = name

    async def write_batch(self, batch: list[WriteIntent]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write_batch(batch)")

    async def open(self) -> None:
        """Called once before the first write."""

    async def close(self) -> None:
        """Called once after the last write."""

    def registered_types(self) -> dict[str, type]:
        """Stored type name -> type, for the model types this sink rebuilds on replay."""
        return {type_name(t): t for t in self.payload_types}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def on(*models: type) -> Callable[[F], F]:
    """Mark a TypedSink method as the writer of payloads of these types (and subclasses).

    The method receives the list of payloads of its types, in enqueue order.
    """
    if not models or not all(isinstance(m, type) for m in models):
        raise ConfigError(f"@on needs one or more types, got {models!r}")

    def mark(fn: F) -> F:
        setattr(fn, _ON_ATTR, getattr(fn, _ON_ATTR, ()) + models)
        return fn

    return mark


class TypedSink(ResultSink):
    """A sink whose `@on(Model)` methods each write the payloads of one type."""

    handlers: dict[type, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type, str] = {}
        for klass in reversed(cls.__mro__):  # subclasses override their bases' handlers
            own: dict[type, str] = {}
            for attr, fn in vars(klass).items():
                for model in getattr(fn, _ON_ATTR, ()):
                    if model in own:
                        raise ConfigError(f"{klass.__name__}: two @on handlers for {model.__name__}: "
                                          f"{own[model]} and {attr}")
                    own[model] = attr
            handlers.update(own)
        cls.handlers = handlers

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._route_cache: dict[type, str | None] = {}

    def registered_types(self) -> dict[str, type]:
        models = [t for t in self.handlers if is_model_type(t)] + list(self.payload_types)
        return {type_name(t): t for t in models}

    def handler_for(self, payload_type: type) -> str | None:
        """The method name that writes `payload_type`: the nearest type in its MRO."""
        if payload_type not in self._route_cache:
            name = next((self.handlers[t] for t in payload_type.__mro__ if t in self.handlers), None)
            self._route_cache[payload_type] = name
        return self._route_cache[payload_type]

    async def write_batch(self, batch: list[WriteIntent]) -> None:
        groups: dict[str, list[Any]] = {}
        rejected: list[tuple[WriteIntent, BaseException]] = []
        for intent in batch:
            name = self.handler_for(type(intent.payload))
            if name is None:
                rejected.append((intent, self._unroutable(intent)))
            else:
                groups.setdefault(name, []).append(intent.payload)
        for name, payloads in groups.items():
            await getattr(self, name)(payloads)
        if rejected:
            raise RejectedIntents(rejected)

    def _unroutable(self, intent: WriteIntent) -> UnroutablePayload:
        taken = ", ".join(sorted(t.__name__ for t in self.handlers)) or "nothing"
        return UnroutablePayload(
            f"sink {self.name!r} has no @on handler for payload type {type(intent.payload).__name__} "
            f"(key {intent.key!r}); its handlers take: {taken}")
