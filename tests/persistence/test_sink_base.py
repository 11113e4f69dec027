"""ResultSink and TypedSink: routing by payload type, MRO-aware, unroutable rejected alone."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest

from piko.errors import ConfigError
from piko.persistence import codec
from piko.persistence.sink_base import RejectedIntents, ResultSink, TypedSink, UnroutablePayload, on
from tests.persistence.conftest import intent


class User(pydantic.BaseModel):
    id: int


class Admin(User):
    level: int = 1


class Order(pydantic.BaseModel):
    id: int


@dataclasses.dataclass
class Event:
    name: str


class Typed(TypedSink):
    def __init__(self) -> None:
        super().__init__(name="typed")
        self.users: list[list[User]] = []
        self.events: list[list[Event]] = []

    @on(User)
    async def write_users(self, users: list[User]) -> None:
        self.users.append(users)

    @on(Event)
    async def write_events(self, events: list[Event]) -> None:
        self.events.append(events)


async def test_payloads_are_grouped_per_handler_and_subclasses_follow_the_mro() -> None:
    sink = Typed()
    await sink.write_batch([intent(1, payload=User(id=1)), intent(2, payload=Event("e")),
                            intent(3, payload=Admin(id=3))])
    assert sink.users == [[User(id=1), Admin(id=3)]]
    assert sink.events == [[Event("e")]]


async def test_a_type_no_handler_takes_is_rejected_alone_after_the_rest_is_written() -> None:
    sink = Typed()
    stray = intent(2, payload=Order(id=2))
    with pytest.raises(RejectedIntents) as caught:
        await sink.write_batch([intent(1, payload=User(id=1)), stray])
    assert sink.users == [[User(id=1)]]
    [(rejected, error)] = caught.value.rejected
    assert rejected is stray
    assert isinstance(error, UnroutablePayload) and "no @on handler for payload type Order" in str(error)


def test_registered_types_are_the_model_types_of_the_handlers() -> None:
    assert Typed().registered_types() == {codec.type_name(User): User, codec.type_name(Event): Event}


def test_a_subclass_handler_overrides_its_base() -> None:
    class Special(Typed):
        @on(User)
        async def write_special(self, users: list[User]) -> None:
            pass

    assert Special().handler_for(Admin) == "write_special"


def test_two_handlers_for_one_type_in_one_class_are_refused() -> None:
    with pytest.raises(ConfigError, match="two @on handlers for User"):
        class Twice(TypedSink):
            @on(User)
            async def a(self, users: list[User]) -> None: ...

            @on(User)
            async def b(self, users: list[User]) -> None: ...


def test_sink_names_must_be_non_empty() -> None:
    with pytest.raises(ConfigError):
        ResultSink("")
