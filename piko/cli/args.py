"""From parsed arguments to what a command works on: settings overrides, the app, the store, times.

A bad value is a ConfigError naming the option and what would be right (exit status 2).
Only `run` and `db init` may create a database: every other command opens an existing one
(`open_existing`), in SQLite's mode "ro" when it only reads (works on a read-only file, never
migrates) or "rw" (never creates the file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from piko.errors import ConfigError, PikoError


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"log_level": getattr(args, "log_level", None)}
    dsn = getattr(args, "dsn", None)
    if dsn:
        out["dsn"] = dsn if "://" in dsn else f"sqlite:///{dsn}"
    http = getattr(args, "http", None)
    if http:
        out.update(http_option(http))
    return out


def http_option(text: str) -> dict[str, Any]:
    """--http HOST:PORT, [IPV6]:PORT, :PORT (127.0.0.1) or off -> settings overrides."""
    if text.lower() in ("off", "no", "false", "0"):
        return {"http_enabled": False}
    usage = f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8000 or [::1]:8000, or 'off'"
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]:")
        if not bracket or not host:
            raise PikoError(usage)
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise PikoError(f"--http {text!r}: put an IPv6 address in brackets, e.g. [::1]:8000")
    if not (port.isascii() and port.isdigit()):
        raise PikoError(usage)
    return {"http_enabled": True, "http_host": host or "127.0.0.1", "http_port": int(port)}


def target_app(args: argparse.Namespace) -> Any:
    """The app the jobs file (args.target) defines, configured by the command line."""
    from piko.cli.loader import load_app

    app = load_app(args.target)
    app.configure(settings_path=args.settings, **settings_overrides(args))
    return app


def bare_app(args: argparse.Namespace) -> Any:
    """An app with no jobs, for commands that only need the store."""
    from piko.app import PikoApp

    app = PikoApp("cli")
    app.configure(settings_path=args.settings, **settings_overrides(args))
    return app


def log_like_run(app: Any) -> None:
    """Commands that run jobs log as `piko run` does: same level and format, secrets masked."""
    from piko.observability.logging import configure_logging

    configure_logging(app.settings.log_level, app.settings.log_json)


def missing_sqlite_file(app: Any) -> str | None:
    """The absolute path of the SQLite file the app would use, if that file does not exist yet."""
    path = getattr(app.store, "path", None)
    if path is not None and app.store.dialect == "sqlite" and not os.path.exists(path):
        return os.path.abspath(path)
    return None


def store_mode(app: Any, mode: str) -> None:
    """Open the store in this mode (SQLite: ro, rw, rwc; MySQL: ro, or rw for both rw and rwc); call
    before app.store is first used. A DSN that names a mode keeps it."""
    dsn = app.settings.store_dsn
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if "mode=" in dsn.partition("?")[2]:
        return
    if scheme in ("", "sqlite", "file"):
        app.configure(dsn=(dsn if scheme else f"sqlite:///{dsn}") + ("&" if "?" in dsn else "?") + f"mode={mode}")
    elif scheme.startswith("mysql"):
        app.configure(dsn=dsn + ("&" if "?" in dsn else "?") + f"mode={'ro' if mode == 'ro' else 'rw'}")


def open_existing(app: Any, mode: str) -> None:
    """Commands other than `run` and `db init` never create a database: a missing SQLite file is an
    error naming it and how to create it; an existing one opens in `mode` ("ro" or "rw")."""
    store_mode(app, mode)
    missing = missing_sqlite_file(app)
    if missing is not None:
        raise ConfigError(f"no piko database at {missing}: create it with `piko db init` (or start "
                          f"`piko run FILE`), or name another one with --dsn")


async def with_store(app: Any, fn: Callable[[Any], Any]) -> Any:
    store = app.store
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def parse_time(text: str, what: str) -> datetime:
    from piko.store.codec import from_db

    try:
        value = from_db(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a time (use ISO 8601, e.g. 2026-01-01T00:00:00Z)") from None
    assert value is not None
    return value


_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)


def parse_after(text: str, tz: str) -> datetime:
    """--after: a time with an offset as given; a naive one is a wall time in --tz."""
    from piko.triggers.timeparse import localize
    from piko.triggers.zones import resolve_zone

    value = parse_time(text, "--after")
    if _OFFSET.search(text.strip()):
        return value
    return localize(value.replace(tzinfo=None), resolve_zone(tz))


def json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
