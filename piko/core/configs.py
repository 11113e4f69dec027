"""Job parameters: validation against a job's schema, and which version is in force.

`schema=` may be a dataclass, a plain class taking keyword arguments, or a model class with
`model_validate` (pydantic v2) or `parse_obj` (v1); piko never imports pydantic. A stored
version applies from its `effective_from` on (None = at once); until then the previous valid
version keeps serving. Every run gets its own copy: ctx["config"] is never shared state.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from piko.core.types import ConfigRow
from piko.errors import ConfigError


def validate_config(schema: Any, data: Any, *, job_id: str) -> Any:
    """Turn raw config data into what the job receives; raise ConfigError with the reason."""
    if data is None:
        data = {}
    if schema is None:
        if not isinstance(data, dict):
            raise ConfigError(f"job {job_id!r}: config must be a JSON object, got {type(data).__name__}")
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"job {job_id!r}: config must be a JSON object for schema {schema.__name__}")
    try:
        if hasattr(schema, "model_validate"):
            return schema.model_validate(data)
        if hasattr(schema, "parse_obj"):
            return schema.parse_obj(data)
        if dataclasses.is_dataclass(schema):
            known = {f.name for f in dataclasses.fields(schema)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"job {job_id!r}: unknown config keys {unknown} for {getattr(schema, '__name__', schema)} "
                                  f"(allowed: {sorted(known)})")
            _check_simple_types(schema, data, job_id)
        return schema(**data)
    except ConfigError:
        raise
    except Exception as exc:  # the schema's own validation error, whatever its type
        reason = " ".join(str(exc).split())[:500]
        raise ConfigError(f"job {job_id!r}: config does not match {getattr(schema, '__name__', schema)}: "
                          f"{reason}") from None


_SIMPLE: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,),
                                        list: (list,), dict: (dict,)}


def _check_simple_types(schema: Any, data: dict[str, Any], job_id: str) -> None:
    """A dataclass takes any value: check the fields annotated with a plain JSON type
    (int, float, str, bool, list, dict, or Optional of one); others are left to the class."""
    try:
        hints = typing.get_type_hints(schema)
    except Exception:  # an annotation that cannot be resolved here: nothing to check against
        return
    for name, value in data.items():
        hint = base = hints.get(name)
        is_optional = False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            is_optional = len(args) < len(typing.get_args(hint))
            base = args[0] if len(args) == 1 else None
        allowed = _SIMPLE.get(base)
        if allowed is None or (value is None and is_optional):
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            want = base.__name__ + (" or null" if is_optional else "")  # type: ignore[union-attr]
            raise ConfigError(f"job {job_id!r}: config field {name!r} must be {want}, "
                              f"got {type(value).__name__} {value!r:.60}")


def parse_config_json(row: ConfigRow) -> Any:
    try:
        return json.loads(row.config_json) if row.config_json not in (None, "") else {}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"job {row.job_id!r} config version {row.version}: config_json is not valid JSON: "
                          f"{exc}") from None


@dataclass(frozen=True)
class ActiveConfig:
    seq: int  # storage order: a later stored version has a larger seq
    version: int
    value: Any
    effective_from: datetime | None


class ConfigBook:
    """The valid config versions known per job, and the one in force at a given time.

    In force = the most recently stored valid version whose effective_from has passed. A
    version waiting for its effective_from leaves the previous one serving; an invalid
    version is reported once and never serves.
    """

    def __init__(self, keep: int = 10) -> None:
        self._versions: dict[str, list[ActiveConfig]] = {}
        self._rejected: dict[tuple[str, int, int, str], str] = {}
        self._keep = keep

    def offer(self, row: ConfigRow, schema: Any) -> str | None:
        """Validate and keep a version; return the rejection reason (first time only) or None."""
        key = (row.job_id, row.seq, row.version, row.config_json)
        if key in self._rejected:
            return None
        known = self._versions.get(row.job_id, [])
        if any(v.seq == row.seq and row.seq for v in known):
            return None
        try:
            value = validate_config(schema, parse_config_json(row), job_id=row.job_id)
        except ConfigError as exc:
            reason = f"{exc} (config version {row.version})"
            self._rejected[key] = reason
            return reason
        versions = [v for v in known if v.seq != row.seq] + [ActiveConfig(row.seq, row.version, value,
                                                                         row.effective_from)]
        versions.sort(key=lambda v: v.seq)
        self._versions[row.job_id] = versions[-self._keep:]
        return None

    def has_version(self, job_id: str, seq: int) -> bool:
        return any(v.seq == seq for v in self._versions.get(job_id, ()))

    def forget(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self._versions.pop(job_id, None)

    def jobs(self) -> list[str]:
        return list(self._versions)

    def active(self, job_id: str, now: datetime) -> ActiveConfig | None:
        for cand in reversed(self._versions.get(job_id, ())):
            if cand.effective_from is None or cand.effective_from <= now:
                return cand
        return None

    def value_for_run(self, job_id: str, now: datetime) -> Any:
        """A private copy of the config in force (or {} when there is none)."""
        current = self.active(job_id, now)
        return copy.deepcopy(current.value) if current is not None else {}
