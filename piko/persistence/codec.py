"""Payload codec: Python values <-> JSON that round-trips the values jobs produce.

Plain JSON values stay plain; anything else becomes a tagged object {"$t": tag, ...}:
datetime, date, time, timedelta, Decimal, bytes, UUID, tuple, set, dicts with non-str
keys, dataclasses and pydantic models (v2 `model_dump(by_alias=True)`/`model_validate`, v1
`dict(by_alias=True)`/`parse_obj`), stored with their actual type name. Enums are stored
as their value. Rules: decoding re-creates a class only if it is in the `types` map the
sink registered, or a subclass of one found through `__subclasses__()` (already imported
by the program), or the declared type of a field of a dataclass being re-created
(`typing.get_type_hints`, also for enum fields); anything else decodes to its field dict,
so a spill file can never make piko import or build an arbitrary class. Any failure to
encode (unsupported type, a cycle, nesting too deep) is a CodecError. Pure: no I/O.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import json
import typing
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from types import UnionType
from typing import Any

TAG = "$t"
_PLAIN = frozenset({str, int, float, bool, type(None)})


class CodecError(ValueError):
    """A value that cannot be encoded, or stored data that cannot be decoded."""


def type_name(cls: type) -> str:
    """The name a type is stored under: module and qualified name."""
    return f"{cls.__module__}.{cls.__qualname__}"


def is_model_type(cls: type) -> bool:
    """True for dataclasses and pydantic models (v1 or v2): the types a sink may register."""
    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or _validator(cls) is not None)


def encode(value: Any) -> Any:
    """`value` as JSON-compatible data (dict/list/str/int/float/bool/None)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is dict:
        return _encode_dict(value)
    if t is list:  # plain items are kept without a call: payloads are mostly leaves
        return [v if type(v) in _PLAIN else encode(v) for v in value]
    encoder = _ENCODERS.get(t)
    if encoder is not None:
        return encoder(value)
    return _encode_other(value)


def _encode_dict(value: dict[Any, Any]) -> dict[str, Any]:
    """A dict of str keys without TAG stays a dict; any other is stored as its item pairs."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if type(k) is not str:
            break
        out[k] = v if type(v) in _PLAIN else encode(v)
    else:
        if TAG not in out:
            return out
    return {TAG: "map", "v": [[encode(k), encode(v)] for k, v in value.items()]}


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
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if not callable(dump) and callable(getattr(value, "parse_obj", None)):
        dump = getattr(value, "dict", None)  # pydantic v1
    if callable(dump):
        try:  # by alias: model_validate/parse_obj read aliases, so field names alone would not load
            dumped = dump(by_alias=True)
        except TypeError:  # a pydantic-style model whose dump takes no options
            dumped = dump()
        return {TAG: "model", "n": type_name(type(value)), "v": encode(dumped)}
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
    bytearray: _tagged("ba64", lambda v: base64.b64encode(v).decode("ascii")),
    uuid.UUID: _tagged("uuid", str),
    tuple: _tagged("tuple", lambda v: [encode(x) for x in v]),
    set: _tagged("set", lambda v: [encode(x) for x in v]),
    frozenset: _tagged("fset", lambda v: [encode(x) for x in v]),
}


def decode(data: Any, types: Mapping[str, type] | None = None) -> Any:
    """The Python value `encode` was given (classes only as the module docstring allows)."""
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
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        raise CodecError(f"stored {tag!r} value cannot be decoded: {exc}") from exc


def resolve(name: str, types: Mapping[str, type]) -> type | None:
    """The registered type stored as `name`, or a subclass of a registered type (never an import)."""
    cls = types.get(name)
    if cls is not None:
        return cls
    for base in types.values():
        seen: set[type] = set()
        stack: list[type] = list(type.__subclasses__(base))
        while stack:
            sub = stack.pop()
            if sub in seen:
                continue
            if type_name(sub) == name:
                return sub
            seen.add(sub)
            stack.extend(type.__subclasses__(sub))
    return None


def _decode_model(data: dict[str, Any], types: Mapping[str, type]) -> Any:
    cls = resolve(data["n"], types)
    if cls is None:
        return decode(data["v"], types)
    if dataclasses.is_dataclass(cls):
        nested, enums = _field_types(cls)
        fields = decode(data["v"], {**types, **nested} if nested else types)
        init = {f.name: _as_enum(enums.get(f.name), fields[f.name])
                for f in dataclasses.fields(cls) if f.init and f.name in fields}
        return cls(**init)
    return _validate(cls, decode(data["v"], types))


def _validator(cls: type) -> Callable[[Any], Any] | None:
    validate = getattr(cls, "model_validate", None) or getattr(cls, "parse_obj", None)
    return validate if callable(validate) else None


def _validate(cls: type, fields: Any) -> Any:
    """Build a model from its dump; records written before dumps used aliases hold field names."""
    validate = _validator(cls)
    if validate is None:
        return fields
    try:
        return validate(fields)
    except ValueError:  # pydantic's ValidationError is a ValueError
        by_alias = _names_to_aliases(cls, fields)
        if by_alias is None:
            raise
        return validate(by_alias)


def _names_to_aliases(cls: type, fields: Any) -> dict[str, Any] | None:
    declared = getattr(cls, "model_fields", None) or getattr(cls, "__fields__", None)
    if not isinstance(fields, dict) or not isinstance(declared, dict):
        return None
    renamed = {}
    for key, value in fields.items():
        info = declared.get(key)
        alias = getattr(info, "validation_alias", None) or getattr(info, "alias", None)
        renamed[alias if isinstance(alias, str) else key] = value
    return renamed if renamed != fields else None


@functools.lru_cache(maxsize=512)
def _field_types(cls: type) -> tuple[dict[str, type], dict[str, type]]:
    """(model types named in the field annotations by stored name, enum type by field name)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an unresolvable forward reference: nested values stay dicts
        return {}, {}
    nested: dict[str, type] = {}
    enums: dict[str, type] = {}
    for field in dataclasses.fields(cls):
        hint = hints.get(field.name)
        for t in _named_types(hint):
            if is_model_type(t):
                nested[type_name(t)] = t
        members = [t for t in typing.get_args(hint) if t is not type(None)] if _is_union(hint) else [hint]
        if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], enum.Enum):
            enums[field.name] = members[0]  # `Color` or `Color | None`
    return nested, enums


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, UnionType)


def _named_types(hint: Any) -> list[type]:
    """The classes in an annotation: `list[Addr] | None` -> [list, Addr, NoneType]."""
    found: list[type] = []
    stack = [hint]
    while stack:
        t = stack.pop()
        if isinstance(t, type):
            found.append(t)
        stack.extend(typing.get_args(t))
        origin = typing.get_origin(t)
        if isinstance(origin, type):
            found.append(origin)
    return found


def _as_enum(cls: type | None, value: Any) -> Any:
    if cls is None or value is None or isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:  # a value the enum no longer has: keep it as stored
        return value


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
    "fset": lambda d, t: frozenset(decode(d["v"], t)),
    "ba64": lambda d, _: bytearray(base64.b64decode(d["v"])),
    "map": lambda d, t: {_hashable(decode(k, t)): decode(v, t) for k, v in d["v"]},
    "dc": _decode_model,
    "model": _decode_model,
}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _json_writer() -> Callable[[Any], str]:
    """Compact JSON text of what `encode` returned, from an encoder made once (json.dumps makes one
    per call): the json module's C encoder without its cycle check, which `encode` makes needless
    (it builds every container afresh, and fails on a cycle first); else json.JSONEncoder."""
    fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return fallback
    try:
        chunks = make(None, None, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    except TypeError:  # a C encoder that takes other arguments
        return fallback

    def write(data: Any) -> str:
        return "".join(chunks(data, 0))

    return write


_to_json = _json_writer()


def dumps(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON bytes; CodecError for anything that cannot be stored."""
    try:
        return _to_json(encode(value)).encode("utf-8")
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("cannot store the payload: it contains a cycle or is nested too deeply") from None
    except Exception as exc:  # a model_dump that raises, a str with lone surrogates, ...
        raise CodecError(f"cannot store the payload: {type(exc).__name__}: {exc}") from exc


def loads(raw: bytes, types: Mapping[str, type] | None = None) -> Any:
    """The value `dumps` was given."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"stored value is not valid JSON: {exc}") from exc
    except RecursionError:
        raise CodecError("stored value is nested too deeply to decode") from None
    try:
        return decode(data, types)
    except RecursionError:
        raise CodecError("stored value is nested too deeply to decode") from None
