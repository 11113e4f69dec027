"""Logging setup: human-readable lines by default, one JSON object per line with log_json.

Every line a run emits carries job_id and run_id: RunLogger binds them, and for any other
logger (job code's own `logging.getLogger("mylib")`) RunContextFilter reads them from a
context variable the runner sets with bind_run_context. Secrets are masked here, in one
place: DSN passwords, `password=` / `"token": "..."` style pairs and extra fields never
reach the stream. configure_logging puts one handler on the `piko` logger and, unless the
root logger already has handlers of your own, on the root logger too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar, Token
from typing import Any

# user:password@ up to the LAST @ of the authority: an unescaped @ inside a password is common.
# Both patterns match only where a run of name characters starts (the lookbehinds): tried at
# every position of a long token (a 100 KB blob in an exception message) they took seconds.
_DSN_PASSWORD = re.compile(r"(?<![a-zA-Z0-9+.\-])(?P<scheme>[a-zA-Z0-9+.\-]+://)(?P<user>[^:/@\s]*):"
                           r"(?P<pw>[^\s/?#]*)@")
_SECRET_WORD = r"(?:password|passwd|pwd|secret(?:[_-]?key)?|token|api[_-]?key|access[_-]?key|private[_-]?key)"
# A key that ends in a secret word (db_password, MYSQL_PWD, "api_key"), = or :, then the value:
# quoted (JSON, Python reprs) or a bare run up to a delimiter.
_KV_SECRET = re.compile(
    r"(?i)(?P<key>(?P<q>[\"']?)(?<![A-Za-z0-9_.\-])[A-Za-z0-9_.\-]*" + _SECRET_WORD + r"(?P=q))"
    r"(?P<sep>\s*[:=]\s*)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^&\s'\",;}\]]+)"
)
_SECRET_KEY = re.compile(r"(?i)\A[A-Za-z0-9_.\-]*" + _SECRET_WORD + r"\Z")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_PLAIN = (int, float, bool, type(None))

_run_context: ContextVar[tuple[str, int | None] | None] = ContextVar("piko_run_context", default=None)


def mask_secrets(text: str) -> str:
    """Replace passwords in DSNs and secret key/value pairs with ***."""
    text = _DSN_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_SECRET.sub(_mask_pair, text)


def _mask_pair(m: re.Match[str]) -> str:
    value = m["value"]
    if value.rstrip(")").upper() in ("YES", "NO"):  # MySQL's "(using password: YES)" says no secret
        return m[0]
    quote = value[0] if value[0] in "\"'" else ""
    return f"{m['key']}{m['sep']}{quote}***{quote}"


def mask_dsn(dsn: str | None) -> str:
    return mask_secrets(dsn) if dsn else ""


def bind_run_context(job_id: str, run_id: int | None) -> Token[tuple[str, int | None] | None]:
    """Mark the current context (the run's task) as inside run `run_id` of `job_id`.

    Lines logged from it through any logger then carry job_id and run_id. Returns the token
    for reset_run_context; a run's task ends with the run, so resetting is optional there.
    """
    return _run_context.set((job_id, run_id))


def reset_run_context(token: Token[tuple[str, int | None] | None]) -> None:
    _run_context.reset(token)


def current_run_context() -> tuple[str, int | None] | None:
    return _run_context.get()


class RunContextFilter(logging.Filter):
    """Adds job_id and run_id to records logged inside a run that do not carry them."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _run_context.get()
        if context is not None and getattr(record, "job_id", None) is None:
            record.job_id, record.run_id = context
        return True


class MaskingFilter(logging.Filter):
    """Masks the message and the string (or stringified) extra fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad format args: let the handler report it, not the caller's code
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        for key, value in list(record.__dict__.items()):
            if key in _RESERVED or key.startswith("_"):
                continue
            if _SECRET_KEY.match(key):  # extra={"db_password": ...}: whatever the value is
                record.__dict__[key] = "***"
                continue
            if isinstance(value, _PLAIN):
                continue
            text = value if isinstance(value, str) else str(value)
            masked = mask_secrets(text)
            if masked != text:
                record.__dict__[key] = masked
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value if isinstance(value, (str, *_PLAIN)) else str(value)
        if record.exc_info:
            doc["exc"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger [job_id run_id] message`, UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(runtag)s%(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        run_id = getattr(record, "run_id", None)
        record.runtag = f"[{job_id} run={run_id}] " if job_id else ""
        text = super().format(record)
        return mask_secrets(text) if record.exc_info else text


def configure_logging(level: str = "INFO", as_json: bool = False, stream: Any = None) -> None:
    """Install piko's handler (idempotent: reconfiguring replaces it).

    On the `piko` logger always (it does not propagate, so piko's lines never reach handlers
    of yours unmasked); on the root logger too, at `level`, unless the root already has
    handlers that are not piko's: then your setup decides, and RunContextFilter and
    MaskingFilter can be added to your handlers.
    """
    import time

    logger, root = logging.getLogger("piko"), logging.getLogger()
    for owner in (logger, root):
        for old in [h for h in owner.handlers if getattr(h, "_piko", False)]:
            owner.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if as_json else TextFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RunContextFilter())
    handler.addFilter(MaskingFilter())
    handler._piko = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(level.upper())


class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger bound to one run: every line carries job_id and run_id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra: Mapping[str, Any] = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs


_JOB_LOGGERS: dict[str, logging.Logger] = {}


def run_logger(job_id: str, run_id: int | None) -> RunLogger:
    base = _JOB_LOGGERS.get(job_id)
    if base is None:
        base = _JOB_LOGGERS[job_id] = logging.getLogger(f"piko.job.{job_id}")
    return RunLogger(base, {"job_id": job_id, "run_id": run_id})
