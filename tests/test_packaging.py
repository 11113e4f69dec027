"""What a distribution of piko carries besides code: the license it declares."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_pyproject_declares_ships_as_a_license_file_with_that_text():
    declared = re.search(r'^license\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None and declared.group(1) == "MIT"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the piko authors" in text
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_every_data_file_the_package_reads_is_declared_package_data():
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from importlib import resources

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["piko"]
    data = sorted(p.relative_to(ROOT / "piko").as_posix() for p in (ROOT / "piko").rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc"))
    assert data == sorted(declared), "a file under piko/ that is not Python must be listed as package data"
    assert resources.files("piko.http").joinpath("status.html").read_text(encoding="utf-8").startswith("<!doctype html>")
