"""Payload codec: values round-trip; classes are rebuilt only when the sink registered them."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pydantic
import pydantic.v1
import pytest
from hypothesis import given
from hypothesis import strategies as st

from piko.persistence import codec


@dataclasses.dataclass
class Point:
    x: int
    at: datetime


class User(pydantic.BaseModel):
    id: int
    name: str
    joined: datetime | None = None


class Color(enum.Enum):
    RED = "red"


TYPES = {codec.type_name(Point): Point, codec.type_name(User): User}


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1.5, None, True, "x"]},
    [1, 2, [3]],
    "text", 3, 2.5, None, False,
    datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=8))),
    datetime(2026, 1, 2, 3, 4, 5),
    date(2026, 1, 2), time(1, 2, 3), timedelta(seconds=90.5),
    Decimal("12345678901234567890.000000001"),
    b"\x00\xffbytes", uuid.UUID(int=5), (1, "a"), {1, 2},
    {1: "int key", "x": 2}, {"$t": "a user dict that looks tagged"},
    {"x": 2, 1: "int key after a str key"}, {"a": [1, (2,)], "$t": "tagged-looking key after others"},
    {"nested": {"when": datetime(2026, 1, 1, tzinfo=timezone.utc), "amount": Decimal("9.90")}},
])
def test_values_round_trip(value: Any) -> None:
    assert codec.loads(codec.dumps(value)) == value


@pytest.mark.parametrize("value", [frozenset({1, 2}), bytearray(b"\x00ab"), {"k": (frozenset(), bytearray())}])
def test_frozensets_and_bytearrays_keep_their_types(value: Any) -> None:
    back = codec.loads(codec.dumps(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, dict):
        assert [type(x) for x in back["k"]] == [frozenset, bytearray]


def test_registered_dataclass_and_model_are_rebuilt() -> None:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    values = [Point(1, when), User(id=1, name="alice", joined=when)]
    assert codec.loads(codec.dumps(values), TYPES) == values


def test_unregistered_types_decode_to_their_fields_never_to_an_imported_class() -> None:
    data = codec.dumps(User(id=1, name="alice"))
    assert codec.loads(data) == {"id": 1, "name": "alice", "joined": None}


def test_enum_is_stored_as_its_value() -> None:
    assert codec.loads(codec.dumps({"c": Color.RED})) == {"c": "red"}


def test_unsupported_type_fails_with_a_clear_message() -> None:
    with pytest.raises(codec.CodecError, match="cannot store a payload of type builtins.object"):
        codec.dumps(object())


def test_unknown_tag_is_a_codec_error() -> None:
    with pytest.raises(codec.CodecError, match="unknown stored value tag"):
        codec.loads(b'{"$t": "martian", "v": 1}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary() | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(timezone.utc)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


@given(json_values)
def test_any_supported_value_round_trips(value: Any) -> None:
    assert codec.loads(codec.dumps(value)) == value


# -- encoding failures of every kind are CodecErrors ------------------------------------

class BrokenDump(pydantic.BaseModel):
    id: int

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("dump exploded")


def circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value, reason", [
    (circular(), "cycle or is nested too deeply"),
    (nested(5000), "cycle or is nested too deeply"),
    ({"n": 10 ** 5000}, "ValueError"),  # beyond int -> str conversion limits
    (BrokenDump.model_construct(id=1), "dump exploded"),
    ("\ud800 lone surrogate", "UnicodeEncodeError"),
])
def test_any_encoding_failure_is_a_codec_error(value: Any, reason: str) -> None:
    with pytest.raises(codec.CodecError, match=reason):
        codec.dumps(value)


def test_stored_values_nested_too_deeply_are_a_codec_error() -> None:
    with pytest.raises(codec.CodecError, match="nested too deeply"):
        codec.loads(b"[" * 100_000 + b"]" * 100_000)


# -- pydantic aliases -------------------------------------------------------------------

class Aliased(pydantic.BaseModel):
    user_name: str = pydantic.Field(alias="userName")
    joined: datetime


class ByName(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)
    user_name: str = pydantic.Field(alias="userName")


class OldStyle(pydantic.v1.BaseModel):
    user_name: str = pydantic.v1.Field(alias="userName")


@pytest.mark.parametrize("model", [
    Aliased(userName="ann", joined=datetime(2026, 1, 1, tzinfo=timezone.utc)),
    ByName(user_name="bob"),
    User(id=1, name="no aliases"),
    OldStyle(userName="pydantic v1"),
])
def test_models_round_trip_with_and_without_aliases(model: Any) -> None:
    types = {codec.type_name(type(model)): type(model)}
    assert codec.loads(codec.dumps(model), types) == model


def test_records_stored_by_field_name_still_load_aliased_models() -> None:
    stored = b'{"$t":"model","n":"%s","v":{"user_name":"ann","joined":"2026-01-01T00:00:00Z"}}' % (
        codec.type_name(Aliased).encode())
    assert codec.loads(stored, {codec.type_name(Aliased): Aliased}).user_name == "ann"


# -- which classes decoding may re-create -----------------------------------------------

@dataclasses.dataclass
class Base:
    x: int


@dataclasses.dataclass
class Sub(Base):
    y: int = 2


class PSub(Aliased):
    level: int = 0


@dataclasses.dataclass
class Address:
    city: str


@dataclasses.dataclass
class Person:
    name: str
    home: Address
    past: list[Address]
    color: Color
    maybe: Color | None = None


def test_subclasses_of_registered_types_come_back_as_themselves() -> None:
    types = {codec.type_name(Base): Base, codec.type_name(Aliased): Aliased}
    values = [Sub(1, 5), PSub(userName="bob", joined=datetime(2026, 1, 1, tzinfo=timezone.utc), level=3)]
    decoded = codec.loads(codec.dumps(values), types)
    assert decoded == values and [type(v) for v in decoded] == [Sub, PSub]


def test_a_subclass_of_nothing_registered_stays_a_dict() -> None:
    assert codec.loads(codec.dumps(Sub(1, 5)), {codec.type_name(Point): Point}) == {"x": 1, "y": 5}


def test_nested_dataclasses_and_enum_fields_are_rebuilt_from_their_annotations() -> None:
    person = Person("p", Address("x"), [Address("y")], Color.RED, Color.RED)
    decoded = codec.loads(codec.dumps(person), {codec.type_name(Person): Person})
    assert decoded == person
    assert type(decoded.home) is Address and type(decoded.past[0]) is Address and decoded.color is Color.RED


def test_nested_types_are_trusted_only_inside_a_registered_dataclass() -> None:
    assert codec.loads(codec.dumps([Address("x")]), {codec.type_name(Person): Person}) == [{"city": "x"}]


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, float("nan"), float("inf"), -0.0, 10**30], "ü": "naïve \u2028 \\ \"q\"", "e": {}, "l": []},
    "top-level text", 3, None, [{"$t": "x"}, {1: 2}], {"when": datetime(2026, 1, 1, tzinfo=timezone.utc)},
])
def test_dumps_writes_what_json_dumps_writes(value: Any) -> None:
    expected = json.dumps(codec.encode(value), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert codec.dumps(value) == expected

