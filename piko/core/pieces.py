"""Pieces of one fire: broadcast copies, static shards, map items. Pure: names and JSON rules.

A piece is a run like any other, in its own slot: its job_id is `handler[key]`, so the
one-run-per-(job_id, scheduled_time) lock, attempts, heartbeats, cancel and the dead-instance
sweep apply to every piece unchanged, and a piece done once is never done again.

    shard i of n of job J       J[i/n]
    broadcast copy on X         J[@X]          queued on X's own queue (private_queue)
    step S of workflow W        W[step:S]      runs the code registered as 'W.S' (core/workflow.py)
    item i of map call c        T[P:c#i]       task T, parent slot P (a job, or a piece), c-th map call

A piece's key does not name the parent's attempt: a re-run parent finds the pieces an earlier
attempt made (done ones are reused). Job ids may not contain '['. `payload` (JSON) is what the
piece gets (the item; [i, n] for a shard); `result` (JSON) what it returned, capped in size.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from piko.errors import PikoError

OPEN = "["
SLOT_MAX = 191  # job_run.job_id and job_lock.job_id are VARCHAR(191)
RESULT_MAX_BYTES = 64 * 1024
_SHARD = re.compile(r"^(\d+)/(\d+)$")


class PieceError(PikoError):
    """A map item or result that cannot be stored (not JSON, too big), or an unknown task."""


@dataclass(frozen=True)
class PieceKey:
    handler: str  # the job or task whose code runs the piece
    kind: str  # "shard" | "broadcast" | "item"
    key: str  # what is between the brackets


def is_piece(job_id: str) -> bool:
    return job_id.endswith("]") and OPEN in job_id


def handler_of(job_id: str) -> str:
    """The registered job or task a slot's runs call (the slot itself for a plain job)."""
    return job_id.split(OPEN, 1)[0] if is_piece(job_id) else job_id


def parse(job_id: str) -> PieceKey | None:
    if not is_piece(job_id):
        return None
    handler, key = job_id[:-1].split(OPEN, 1)
    if key.startswith("@"):
        return PieceKey(handler, "broadcast", key[1:])
    if _SHARD.match(key):
        return PieceKey(handler, "shard", key)
    if key.startswith("step:"):
        return PieceKey(handler, "step", key[5:])
    return PieceKey(handler, "item", key)


def spec_name(job_id: str) -> str:
    """The registry name of the code a slot's runs call: a step's is 'workflow.step'."""
    found = parse(job_id)
    if found is None:
        return job_id
    return f"{found.handler}.{found.key}" if found.kind == "step" else found.handler


def step_slot(workflow: str, step: str) -> str:
    slot = f"{workflow}{OPEN}step:{step}]"
    if len(slot) > SLOT_MAX:
        raise PieceError(f"workflow {workflow!r} step {step!r}: the names are too long together (at most {SLOT_MAX})")
    return slot


def _fit(slot: str, handler: str, key: str) -> str:
    if len(slot) <= SLOT_MAX:
        return slot
    digest = hashlib.sha1(key.encode()).hexdigest()[:20]  # noqa: S324 - a name, not a secret
    return f"{handler}{OPEN}~{digest}]"


def shard_slot(job_id: str, index: int, total: int) -> str:
    return _fit(f"{job_id}{OPEN}{index}/{total}]", job_id, f"{index}/{total}")


def broadcast_slot(job_id: str, instance_id: str) -> str:
    return _fit(f"{job_id}{OPEN}@{instance_id}]", job_id, "@" + instance_id)


def item_prefix(task: str, parent_job: str, call: int) -> str:
    """Every item slot of one map call starts with this."""
    parent = parent_job if len(parent_job) <= 80 else hashlib.sha1(parent_job.encode()).hexdigest()[:20]  # noqa: S324
    return f"{task}{OPEN}{parent}:{call}#"


def item_slot(prefix: str, index: int) -> str:
    slot = f"{prefix}{index}]"
    if len(slot) > SLOT_MAX:
        raise PieceError(f"map slot {slot[:60]}... is longer than {SLOT_MAX} characters: use a shorter task id")
    return slot


def shard_of(job_id: str) -> tuple[int, int] | None:
    """(index, total) of a shard slot."""
    found = parse(job_id)
    if found is None or found.kind != "shard":
        return None
    index, total = found.key.split("/")
    return int(index), int(total)


def private_queue(instance_id: str) -> str:
    """The queue only one instance takes from (broadcast copies): '@' + a short stable digest."""
    return "@" + hashlib.sha1(instance_id.encode()).hexdigest()[:24]  # noqa: S324


ITEM_MAX_BYTES = 1024 * 1024


def encode_item(task: str, index: int, item: Any) -> str:
    try:
        text = json.dumps(item, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PieceError(f"ctx.map({task!r}): item {index} cannot be stored as JSON: {exc}") from None
    if len(text) > ITEM_MAX_BYTES // 4 and len(text.encode()) > ITEM_MAX_BYTES:
        raise PieceError(f"ctx.map({task!r}): item {index} is over {ITEM_MAX_BYTES:,} bytes of JSON "
                         f"(pass a reference, e.g. a path or a key, instead of the data)")
    return text


def encode_result(job_id: str, value: Any, max_bytes: int = RESULT_MAX_BYTES) -> str:
    """A piece's return value as stored; PieceError (the piece FAILED) when not JSON or too big."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PieceError(f"{job_id}: the result cannot be stored as JSON: {exc}") from None
    size = len(text.encode())
    if size > max_bytes:
        raise PieceError(f"{job_id}: the result is {size:,} bytes of JSON, over the {max_bytes:,}-byte cap "
                         f"(return a reference, e.g. a path or a key, instead of the data)")
    return text


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)
