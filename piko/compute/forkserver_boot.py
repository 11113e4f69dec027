"""Imported by the multiprocessing fork server at its start (a preload module).

The fork server is the parent of every forkserver worker, and workers die with their
parent. A SIGTERM to the whole process group (`timeout`, `kill -- -PGID`, systemd's
KillMode=control-group) would kill it, and with it every worker mid-call, while piko
itself drains its runs within shutdown_timeout_s. So it ignores SIGTERM (it already
ignores SIGINT); it still exits as soon as piko does, when its pipe to piko closes. The
workers it forks inherit this; they are stopped by piko with SIGKILL, never SIGTERM.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
