"""Payload codec: Python values <-> JSON that round-trips the values jobs produce.

Plain JSON values stay plain; anything else becomes a tagged object {"$t": tag, ...}:
datetime, date, time, timedelta, Decimal, bytes, UUID, tuple, set, dicts with non-str
keys, dataclasses and pydantic-style models (`model_dump`/`model_validate`). Enums are
stored as their value. Rule: decoding re-creates a dataclass or model only when its type
is in the `types` map the sink registered, so a spill file can never make piko import or
build an arbitrary class; an unregistered one decodes to its field dict. Pure: no I/O.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

TAG = "$t"
_PLAIN = (str, int, float, bool, type(None))


class CodecError(ValueError):
    """A value that cannot be encoded, or stored data that cannot be decoded."""


def type_name(cls: type) -> str:
    """The name a type is stored under: module and qualified name."""
    return f"{cls.__module__}.{cls.__qualname__}"


def is_model_type(cls: type) -> bool:
    """True for dataclasses and pydantic-style models: the types a sink may register."""
    return dataclasses.is_dataclass(cls) or callable(getattr(cls, "model_validate", None))


def encode(value: Any) -> Any:
    """`value` as JSON-compatible data (dict/list/str/int/float/bool/None)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is dict:
        if TAG not in value and all(type(k) is str for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {TAG: "map", "v": [[encode(k), encode(v)] for k, v in value.items()]}
    if t is list:
        return [encode(v) for v in value]
    encoder = _ENCODERS.get(t)
    if encoder is not None:
        return encoder(value)
    return _encode_other(value)


def _encode_other(value: Any) -> Any:
    """Subclasses, enums, dataclasses and models (the slow path)."""
    if isinstance(value, enum.Enum):
        return encode(value.value)
    for base, encoder in _ENCODERS.items():
        if isinstance(value, base):
            return encoder(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {TAG: "dc", "n": type_name(type(value)), "v": fields}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return {TAG: "model", "n": type_name(type(value)), "v": encode(dump())}
    if isinstance(value, Mapping):
        return encode(dict(value))
    for base in (str, int, float):
        if isinstance(value, base):
            return base(value)
    raise CodecError(
        f"cannot store a payload of type {type_name(type(value))}: use dicts, lists, scalars, "
        "datetime, Decimal, bytes, dataclasses or pydantic-style models")


def _tagged(tag: str, convert: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any]]:
    return lambda v: {TAG: tag, "v": convert(v)}


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    datetime: _tagged("dt", datetime.isoformat),
    date: _tagged("date", date.isoformat),
    time: _tagged("time", time.isoformat),
    timedelta: _tagged("td", timedelta.total_seconds),
    Decimal: _tagged("dec", str),
    bytes: _tagged("b64", lambda v: base64.b64encode(v).decode("ascii")),
    bytearray: _tagged("b64", lambda v: base64.b64encode(v).decode("ascii")),
    uuid.UUID: _tagged("uuid", str),
    tuple: _tagged("tuple", lambda v: [encode(x) for x in v]),
    set: _tagged("set", lambda v: [encode(x) for x in v]),
    frozenset: _tagged("set", lambda v: [encode(x) for x in v]),
}


def decode(data: Any, types: Mapping[str, type] | None = None) -> Any:
    """The Python value `encode` was given (models only for types in `types`)."""
    t = type(data)
    if t is list:
        return [decode(v, types) for v in data]
    if t is not dict:
        return data
    tag = data.get(TAG)
    if tag is None:
        return {k: decode(v, types) for k, v in data.items()}
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise CodecError(f"unknown stored value tag {tag!r} (written by a newer piko?)")
    try:
        return decoder(data, types or {})
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise CodecError(f"stored {tag!r} value cannot be decoded: {exc}") from exc


def _decode_model(data: dict[str, Any], types: Mapping[str, type]) -> Any:
    fields = decode(data["v"], types)
    cls = types.get(data["n"])
    if cls is None:
        return fields
    if dataclasses.is_dataclass(cls):
        init = {f.name: fields[f.name] for f in dataclasses.fields(cls) if f.init and f.name in fields}
        return cls(**init)
    return cls.model_validate(fields)  # type: ignore[attr-defined]


_DECODERS: dict[str, Callable[[dict[str, Any], Mapping[str, type]], Any]] = {
    "dt": lambda d, _: datetime.fromisoformat(d["v"]),
    "date": lambda d, _: date.fromisoformat(d["v"]),
    "time": lambda d, _: time.fromisoformat(d["v"]),
    "td": lambda d, _: timedelta(seconds=d["v"]),
    "dec": lambda d, _: Decimal(d["v"]),
    "b64": lambda d, _: base64.b64decode(d["v"]),
    "uuid": lambda d, _: uuid.UUID(d["v"]),
    "tuple": lambda d, t: tuple(decode(d["v"], t)),
    "set": lambda d, t: set(decode(d["v"], t)),
    "map": lambda d, t: {_hashable(decode(k, t)): decode(v, t) for k, v in d["v"]},
    "dc": _decode_model,
    "model": _decode_model,
}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def dumps(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON bytes."""
    return json.dumps(encode(value), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(raw: bytes, types: Mapping[str, type] | None = None) -> Any:
    """The value `dumps` was given."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"stored value is not valid JSON: {exc}") from exc
    return decode(data, types)
