"""The version users see (piko --version, piko.__version__, /metrics build info) is the package's."""

from __future__ import annotations

import re
from pathlib import Path

import piko
from piko.version import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_version_and_piko_version_agree() -> None:
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert declared is not None and declared.group(1) == __version__ == piko.__version__
