"""WriteIntent: checked when built, so a bad intent fails in the job that made it."""

from __future__ import annotations

import pytest

from piko.errors import ConfigError
from piko.persistence.intent import WriteIntent
from tests.persistence.conftest import SCHEDULED_AT


def test_seed_style_intent_has_upsert_default_and_no_idempotency_key() -> None:
    i = WriteIntent(sink="print", key="1", payload={"i": 1}, job_id="j", run_id=7, scheduled_time=SCHEDULED_AT)
    assert i.op_type == "upsert" and i.idempotency_key is None
    assert i.dedupe_key == "print/j/7/1"


def test_explicit_idempotency_key_is_the_dedupe_key() -> None:
    i = WriteIntent("s", "k", 1, "j", 1, None, idempotency_key="abc")
    assert i.dedupe_key == "abc"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"sink": ""}, "sink name"),
    ({"key": 1.5}, "key must be a str or int"),
    ({"op_type": "merge"}, "op_type 'merge'"),
    ({"scheduled_time": "2026-01-01"}, "scheduled_time must be a datetime"),
    ({"run_id": ["x"]}, "run_id must be an int, a str or None"),
    ({"run_id": True}, "run_id must be an int, a str or None"),
    ({"job_id": 7}, "job_id must be a str or None"),
    ({"idempotency_key": 7}, "idempotency_key must be a str or None"),
])
def test_invalid_fields_are_refused_with_a_message_naming_the_field(kwargs: dict, fragment: str) -> None:
    fields = dict(sink="s", key="k", payload=None, job_id="j", run_id=1, scheduled_time=None) | kwargs
    with pytest.raises(ConfigError, match=fragment):
        WriteIntent(**fields)


def test_intent_is_frozen() -> None:
    i = WriteIntent("s", "k", 1, "j", 1, None)
    with pytest.raises(AttributeError):
        i.key = "other"  # type: ignore[misc]
