"""Logging setup: human-readable lines by default, one JSON object per line with log_json.

Every line a run emits carries job_id and run_id (RunLogger). Secrets are masked here, in
one place: DSN passwords and `password=`/`token=` style pairs never reach a handler.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

_DSN_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_KV_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|secret|token)=([^&\s'\";]+)")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def mask_secrets(text: str) -> str:
    """Replace passwords in DSNs and key=value pairs with ***."""
    text = _DSN_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_SECRET.sub(lambda m: f"{m.group(1)}=***", text)


def mask_dsn(dsn: str | None) -> str:
    return mask_secrets(dsn) if dsn else ""


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
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
                doc[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
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
    """Install one handler on the `piko` logger (idempotent: reconfiguring replaces it)."""
    import time

    logger = logging.getLogger("piko")
    for handler in list(logger.handlers):
        if getattr(handler, "_piko", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = JsonFormatter() if as_json else TextFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_MaskingFilter())
    handler._piko = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


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
