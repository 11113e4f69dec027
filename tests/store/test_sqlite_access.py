"""Why a SQLite file cannot be opened or written: the diagnosis behind the store's one-line errors."""

from __future__ import annotations

import os
from types import SimpleNamespace

from piko.store.sqlite.access import access_problem, uri


def test_uri_quotes_the_absolute_path_and_carries_the_mode(tmp_path):
    assert uri(str(tmp_path / "a b?.db"), "ro") == f"file:{tmp_path}/a%20b%3F.db?mode=ro"
    assert uri("x.db", "ro", is_immutable=True).endswith("/x.db?mode=ro&immutable=1")


def test_a_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=real(p).f_flag | os.ST_RDONLY))
    assert access_problem(str(tmp_path / "new.db"), "rwc") == \
        f"{tmp_path} is on a read-only file system: remount it read-write, or name a file elsewhere"
    (tmp_path / "old.db").write_bytes(b"")
    assert "read-only file system" in access_problem(str(tmp_path / "old.db"), "rw")
    assert access_problem(str(tmp_path / "old.db"), "ro") is None  # reading needs no write access


def test_a_missing_file_or_folder_is_named(tmp_path):
    assert access_problem(str(tmp_path / "no" / "x.db"), "rwc") == \
        f"its folder {tmp_path / 'no'} does not exist: create it, or name another file"
    assert access_problem(str(tmp_path / "x.db"), "rw") == "the file does not exist"
    assert access_problem(str(tmp_path / "x.db"), "rwc") is None  # it may be created
