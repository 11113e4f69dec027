"""How the SQLite store may open its file, and why it cannot: the open modes and their diagnosis.

Modes are SQLite's own URI modes: "rwc" opens or creates (the default: `piko run`, `piko db
init`), "rw" opens an existing file for writing and never creates one, "ro" only reads (no
migration, no journal pragmas). SQLite's own errors ("unable to open database file", "attempt
to write a readonly database") do not say why; `access_problem` looks at the file system and
names the path and the reason (read-only file system, permission denied, no such file).
"""

from __future__ import annotations

import os
from urllib.parse import quote

MODES = ("rwc", "rw", "ro")


def uri(path: str, mode: str, *, is_immutable: bool = False) -> str:
    """A `file:` URI opening `path` in `mode` (immutable: read without locks or the -wal/-shm files)."""
    return f"file:{quote(os.path.abspath(path))}?mode={mode}" + ("&immutable=1" if is_immutable else "")


def access_problem(path: str, mode: str) -> str | None:
    """Why this process cannot open `path` in `mode` (and write it, unless "ro"), and what to do;
    None if the file system shows no reason."""
    file = os.path.abspath(path)
    folder = os.path.dirname(file)
    if not os.path.isdir(folder):
        return f"its folder {folder} does not exist: create it, or name another file"
    if not os.path.exists(file):
        if mode != "rwc":
            return "the file does not exist"
        return _write_problem(folder, f"it does not exist, and SQLite cannot create it in {folder}")
    if mode == "ro":
        return None if os.access(file, os.R_OK) else \
            f"permission denied: the file is not readable by {_who()}: give this user read access to it"
    if not os.access(file, os.W_OK) and not _is_read_only_fs(folder):
        return (f"permission denied: the file is not writable by {_who()}: give this user write access to it, "
                f"or name another file")
    return _write_problem(folder, f"SQLite cannot create its -wal and -shm files in {folder}")


def _write_problem(folder: str, consequence: str) -> str | None:
    if _is_read_only_fs(folder):
        return f"{folder} is on a read-only file system: remount it read-write, or name a file elsewhere"
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"permission denied: {consequence} (the folder is not writable by {_who()}): give this user "
                f"write access to the folder, or name a file elsewhere")
    return None


def _is_read_only_fs(folder: str) -> bool:
    if not hasattr(os, "statvfs"):  # Windows
        return False
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _who() -> str:
    if not hasattr(os, "geteuid"):  # Windows
        return "this user"
    uid = os.geteuid()
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
