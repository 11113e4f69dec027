"""Payload codec: values round-trip; classes are rebuilt only when the sink registered them."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pydantic
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
    {"nested": {"when": datetime(2026, 1, 1, tzinfo=timezone.utc), "amount": Decimal("9.90")}},
])
def test_values_round_trip(value: Any) -> None:
    assert codec.loads(codec.dumps(value)) == value


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
