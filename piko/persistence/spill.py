"""Spill and dead-letter files: writing them, reading them back, and crash recovery of the directory.

A file is in the record format of records.py: its first record is a JSON header ({"kind",
"sink"}), the others are intent bodies; a damaged header's sink is read off the records.
Commit protocol: a file is written whole to `name.tmp`, fsynced, renamed to `name` (the
rename is the commit point) and the directory fsynced. So at start-up a `.tmp` next to
its `name` is a rewrite that never committed: the old `name` is the truth and the `.tmp`
is deleted; a `.tmp` alone is a new file that never committed: its whole records are
salvaged by renaming it (at-least-once: they may also be in the journal). Files are 0600
in a 0700 directory that one process holds (flock). Replay is in replay.py.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from piko.errors import ConfigError
from piko.persistence.records import FILE_MAGIC, body_sink, frame, fsync_dir, read_records
from piko.protocols import Clock

SPILL_SUFFIX, DEAD_SUFFIX, TMP_SUFFIX, CORRUPT_SUFFIX = ".spill", ".dead", ".tmp", ".corrupt"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "_"


class SpillDir:
    """The spill directory: writes spill and dead-letter files, lists and reads them."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock) -> None:
        self.path = Path(path)
        self.dead_path = self.path / "dead"
        self._clock = clock
        self._seq = itertools.count()
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the directories (0700) and take the directory's lock; blocking."""
        try:
            for d in (self.path, self.dead_path):
                if not d.exists():
                    d.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use spill directory {self.path}: {exc.strerror or exc}; set "
                              "persist_spill_dir to a writable directory") from exc
        try:
            import fcntl
        except ImportError:  # no flock on Windows: one process per directory is then on trust
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ConfigError(f"spill directory {self.path} is in use by another process; "
                              "give each process its own persist_spill_dir") from exc

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def new_path(self, sink: str, suffix: str) -> Path:
        """A fresh file name; names sort in creation order."""
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%S%f")
        where = self.dead_path if suffix == DEAD_SUFFIX else self.path
        return where / f"{stamp}-{os.getpid()}-{next(self._seq):06d}.{_safe(sink)}{suffix}"

    def write(self, path: Path, kind: str, sink: str, bodies: Iterable[bytes]) -> Path:
        """Write a whole file atomically and durably (tmp, fsync, rename, fsync dir)."""
        header = json.dumps({"kind": kind, "sink": sink, "version": 1}).encode()
        data = FILE_MAGIC + frame(header) + b"".join(frame(b) for b in bodies)
        tmp = path.with_name(path.name + TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        return path

    def spill(self, sink: str, bodies: list[bytes]) -> Path:
        return self.write(self.new_path(sink, SPILL_SUFFIX), "spill", sink, bodies)

    def dead_letter(self, sink: str, bodies: list[bytes]) -> Path:
        return self.write(self.new_path(sink, DEAD_SUFFIX), "dead", sink, bodies)

    def recover_tmp(self) -> tuple[int, int]:
        """At start-up only, per the commit protocol: (unfinished rewrites undone, new files salvaged)."""
        undone = salvaged = 0
        for where in (self.path, self.dead_path):
            for tmp in sorted(where.glob(f"*{TMP_SUFFIX}")):
                if not tmp.is_file():
                    continue
                final = tmp.with_name(tmp.name[: -len(TMP_SUFFIX)])
                if final.exists():  # the rename never happened: the old file is the committed one
                    tmp.unlink()
                    undone += 1
                else:
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, final)
                    salvaged += 1
            if undone or salvaged:
                fsync_dir(where)
        return undone, salvaged

    def spill_files(self) -> list[Path]:
        return sorted(self.path.glob(f"*{SPILL_SUFFIX}"))

    def dead_files(self) -> list[Path]:
        return sorted(self.dead_path.glob(f"*{DEAD_SUFFIX}"))

    @staticmethod
    def peek_sink(path: Path, head_bytes: int = 64 * 1024) -> str | None:
        """The sink named in a file's header record, reading only its start (None if damaged)."""
        with open(path, "rb") as f:
            bodies, _ = read_records(f.read(head_bytes))
        header = _header(bodies[0]) if bodies else None
        sink = header.get("sink") if header is not None else None
        return sink if isinstance(sink, str) else None

    @staticmethod
    def read(path: Path) -> tuple[str | None, list[bytes], int]:
        """(sink name or None if unreadable, intent record bodies, bad record count)."""
        bodies, bad = read_records(path.read_bytes())
        header = _header(bodies[0]) if bodies else None
        if header is not None:
            sink = header.get("sink")
            if isinstance(sink, str):
                return sink, bodies[1:], bad
            bodies, bad = bodies[1:], bad + 1  # a readable header that names no sink counts as one bad record
        for body in bodies:  # the header record was damaged: the records name their sink
            try:
                return body_sink(body), bodies, bad
            except (ValueError, KeyError, TypeError):
                continue
        return None, bodies, bad


def _header(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and "kind" in data else None
