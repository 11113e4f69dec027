"""python -m piko: argparse subcommands; no logic beyond parsing and calling.

Errors are one readable line on stderr and exit status 2 (usage/config) or 1 (runtime).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from piko.errors import PikoError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="piko", description="piko: async job orchestrator")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dsn", help="store: sqlite:///FILE (default ./piko.db) or mysql://USER:PASS@HOST/DB")
        sp.add_argument("--settings", help="settings TOML file (default: settings.toml / piko.toml)")
        sp.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")

    run = sub.add_parser("run", help="run the jobs in FILE until SIGINT/SIGTERM")
    run.add_argument("target", help="jobs.py, path/jobs.py:app or package.module[:app]")
    run.add_argument("--http", metavar="HOST:PORT", help="serve /healthz /readyz /metrics here ('off' to disable)")
    common(run)

    db = sub.add_parser("db", help="create/migrate (init) or check the store")
    db.add_argument("action", choices=["init", "check"])
    common(db)

    jobs = sub.add_parser("jobs", help="list the jobs in FILE, their schedules and next fire times")
    jobs.add_argument("target")
    jobs.add_argument("-n", type=int, default=3, help="next fire times to show per job")
    common(jobs)

    runs = sub.add_parser("runs", help="recent runs: status, duration, error")
    runs.add_argument("job_id", nargs="?")
    runs.add_argument("--limit", type=int, default=20)
    common(runs)

    nxt = sub.add_parser("next", help="print the next fire times of a schedule expression")
    nxt.add_argument("expr", help="crontab text, @macro, or a JSON object of trigger fields")
    nxt.add_argument("-n", type=int, default=10)
    nxt.add_argument("--tz", default="UTC")
    nxt.add_argument("--type", dest="kind", default=None, choices=["cron", "interval", "date"])
    nxt.add_argument("--after", help="start from this time (ISO 8601; default now)")

    from piko.cli_ops import add_ops_commands

    add_ops_commands(sub, common)
    return p


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"log_level": getattr(args, "log_level", None)}
    dsn = getattr(args, "dsn", None)
    if dsn:
        out["dsn"] = dsn if "://" in dsn else f"sqlite:///{dsn}"
    http = getattr(args, "http", None)
    if http:
        out.update(_http_option(http))
    return out


def _http_option(text: str) -> dict[str, Any]:
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


def _app(args: argparse.Namespace) -> Any:
    from piko.loader import load_app

    app = load_app(args.target)
    app.configure(settings_path=args.settings, **_settings_overrides(args))
    return app


def _bare_app(args: argparse.Namespace) -> Any:
    from piko.app import PikoApp

    app = PikoApp("cli")
    app.configure(settings_path=args.settings, **_settings_overrides(args))
    return app


def cmd_run(args: argparse.Namespace) -> int:
    app = _app(args)
    s = app.settings
    print(f"piko: running {len(app.registry)} job(s) from {args.target}; data in {app.store.description}",
          file=sys.stderr)
    print("piko: stop with Ctrl+C or SIGTERM", file=sys.stderr)
    del s
    app.run()
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    from piko.cli_ops import print_next

    return print_next(args)


def main(argv: Sequence[str] | None = None) -> int:
    from piko import cli_ops

    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {"run": cmd_run, "next": cmd_next, "db": cli_ops.cmd_db, "jobs": cli_ops.cmd_jobs,
                "runs": cli_ops.cmd_runs, **cli_ops.OPS_HANDLERS}
    try:
        return int(handlers[args.command](args) or 0)
    except KeyboardInterrupt:
        return 130
    except PikoError as exc:
        print(f"piko: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"piko: error: {exc}", file=sys.stderr)
        return 1
