"""The house rules, checked on the source: layering, purity, size, one clock, stdlib-only core."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "piko"
MODULES = sorted(p for p in PKG.rglob("*.py"))
LAZY_ALLOWED = {"aiomysql", "pymysql", "tomli", "uvloop", "tomllib"}
PURE = ("triggers/", "core/types.py", "core/backfill.py", "core/policy.py", "core/lifecycle.py", "http/wire.py",
        "errors.py", "compute/states.py", "core/backoff.py")
IO_MODULES = {"asyncio", "socket", "sqlite3", "aiomysql", "logging", "selectors", "threading", "subprocess"}
COMPONENTS = ("piko.leader", "piko.persistence", "piko.compute", "piko.http", "piko.store.sqlite",
              "piko.store.mysql")


def rel(path: Path) -> str:
    return path.relative_to(PKG).as_posix()


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_core_imports_only_the_standard_library(path):
    std = set(sys.stdlib_module_names) | {"__future__"}
    third = {m.split(".")[0] for m in imports(path)} - std - {"piko"}
    assert third <= LAZY_ALLOWED, f"{rel(path)} imports third-party {third - LAZY_ALLOWED}"
    eager = {m.split(".")[0] for m in imports(path, top_level_only=True)} & (LAZY_ALLOWED - {"tomllib"})
    assert not eager, f"{rel(path)} imports {eager} at module level: import lazily where used"


@pytest.mark.parametrize("path", [p for p in MODULES if rel(p).startswith(PURE)], ids=rel)
def test_pure_modules_do_no_io(path):
    bad = {m.split(".")[0] for m in imports(path)} & IO_MODULES
    assert not bad, f"pure module {rel(path)} imports {bad}"


SEED_SHIMS = {"core/runner.py": {"piko.compat"}}  # `from piko.core.runner import job_runner` (the seed API)


@pytest.mark.parametrize("path", [p for p in MODULES if rel(p).startswith(("core/", "triggers/"))], ids=rel)
def test_kernel_side_never_imports_components_or_the_app(path):
    bad = {m for m in imports(path) if m.startswith((*COMPONENTS, "piko.cli", "piko.app", "piko.compat"))}
    assert not bad - SEED_SHIMS.get(rel(path), set()), f"{rel(path)} imports {bad}"


def test_nothing_in_piko_imports_the_seed_shims():
    shims = {"piko." + name[:-3].replace("/", ".") for name in SEED_SHIMS}
    users = {rel(p): imports(p) & shims for p in MODULES if imports(p) & shims}
    assert not users, f"the seed-era paths are for users' code only: {users}"


@pytest.mark.parametrize("mine, other", [("sqlite", "mysql"), ("mysql", "sqlite")])
def test_sqlite_and_mysql_stores_never_import_each_other(mine, other):
    for path in (PKG / "store" / mine).glob("*.py"):
        assert not {m for m in imports(path) if m.startswith(f"piko.store.{other}")}, rel(path)


def test_errors_module_imports_nothing_from_piko():
    assert not {m for m in imports(PKG / "errors.py") if m.startswith("piko")}


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_modules_stay_small(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 400, f"{rel(path)} has {lines} lines: split it by capability"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "clock.py"], ids=rel)
def test_only_the_clock_reads_wall_time(path):
    src = path.read_text(encoding="utf-8")
    assert not re.search(r"datetime\.now\(|datetime\.utcnow\(|time\.time\(\)", src), \
        f"{rel(path)} reads the wall clock: take a Clock"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_every_module_says_what_it_is_for(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{rel(path)} has no module docstring"
