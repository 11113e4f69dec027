"""python -m piko: the command line. `main(argv)` parses, runs one command, returns its exit status.

parser.py is the table of commands and exit codes; commands.py, runs.py and backfill.py do the work;
args.py turns arguments into apps, stores and times; loader.py finds the app in a jobs file.
Errors are one readable line on stderr: exit 2 for usage, settings and input, 1 for runtime.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from piko.cli.parser import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, build_parser
from piko.errors import PikoError, StoreNotWritable, StoreUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    from piko.cli import backfill, cluster, commands, runs, workflow
    from piko.version import __version__

    handlers = {"run": commands.cmd_run, "next": commands.cmd_next, "db": commands.cmd_db,
                "jobs": commands.cmd_jobs, "runs": runs.cmd_runs, "trigger": commands.cmd_trigger,
                "schedule": commands.cmd_schedule, "config": commands.cmd_config, "backfill": backfill.cmd_backfill,
                "worker": cluster.cmd_worker, "cancel": cluster.cmd_cancel, "workers": cluster.cmd_workers,
                "workflow": workflow.cmd_workflow}
    args = build_parser(__version__).parse_args(argv)
    try:
        return int(handlers[args.command](args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except StoreNotWritable as exc:
        print(f"piko: error: {exc} (piko runs, piko jobs and piko db check only read: they work without "
              f"write access)", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:  # nothing wrong with the command: the store is down or unreachable
        print(f"piko: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PikoError as exc:
        print(f"piko: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"piko: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


__all__ = ["main"]
