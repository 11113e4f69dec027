"""The house rules, checked on the source: layering, purity, size, one clock, stdlib-only core."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "piko"
MODULES = sorted(p for p in PKG.rglob("*.py"))
LAZY_ALLOWED = {"aiomysql", "pymysql", "tomli", "uvloop", "tomllib", "distributed"}
PURE = ("triggers/", "core/types.py", "core/backfill.py", "core/policy.py", "core/lifecycle.py", "http/wire.py",
        "errors.py", "compute/states.py", "core/backoff.py", "protocols.py", "version.py", "core/placement.py")
IO_MODULES = {"asyncio", "socket", "sqlite3", "aiomysql", "logging", "selectors", "threading", "subprocess"}
COMPONENTS = ("piko.leader", "piko.persistence", "piko.compute", "piko.http", "piko.store.sqlite",
              "piko.store.mysql")


def rel(path: Path) -> str:
    return path.relative_to(PKG).as_posix()


def imports(path: Path, *, top_level_only: bool = False, at_run_time: bool = False) -> set[str]:
    """The modules `path` imports; `at_run_time` leaves out `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if at_run_time:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                node.body = []
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
    bad = {m.split(".")[0] for m in imports(path, at_run_time=True)} & IO_MODULES
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


def module_name(path: Path) -> str:
    parts = ["piko", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {module_name(p): p for p in MODULES}


def piko_edges(path: Path) -> set[str]:
    """The piko modules `path` imports, lazily or not: `from a.b import c` counts as a.b.c when c
    is a module (else as a.b); a package's own parents are not counted (Python imports them
    implicitly, and they hold no code that imports back)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("piko"))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module.startswith("piko"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in NAMES else node.module)
    return {m for m in found if m in NAMES} - {module_name(path)}


GRAPH = {name: piko_edges(path) for name, path in NAMES.items()}


def _component_of(path: Path) -> str | None:
    name = module_name(path)
    return next((c for c in COMPONENTS if name == c or name.startswith(c + ".")), None)


@pytest.mark.parametrize("path", [p for p in MODULES if _component_of(p)], ids=rel)
def test_components_never_import_the_app_the_cli_or_each_other(path):
    """The HTTP routes, for one, reach the app only through protocols.OpsState / OpsConsole."""
    mine = _component_of(path)
    others = tuple(c for c in COMPONENTS if c != mine)
    bad = {m for m in imports(path) if m.startswith(("piko.app", "piko.cli", "piko.compat", *others))}
    assert not bad, f"{rel(path)} imports {bad}"


def test_no_import_cycle_lazy_imports_included():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert cycles == [], f"import cycles: {cycles}"


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


@pytest.mark.parametrize("path", [p for p in MODULES if rel(p).startswith(PURE)], ids=rel)
def test_pure_modules_import_only_pure_modules_all_the_way_down(path):
    impure = sorted(m for m in reachable(module_name(path)) if not rel(NAMES[m]).startswith(PURE))
    assert not impure, f"pure module {rel(path)} reaches {impure}"


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


def test_the_readme_architecture_lists_what_ls_piko_shows():
    readme = (PKG.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    entries = {p.name + ("/" if p.is_dir() else "") for p in PKG.iterdir()
               if not p.name.startswith("__pycache__") and p.name not in ("py.typed", "__main__.py")}
    missing = sorted(e for e in entries if not re.search(rf"(?m)^  {re.escape(e)}\s", section)
                     and f" {e}" not in section)
    listed = set(re.findall(r"(?m)^  ([a-z_]+(?:\.py|/))", section))
    assert not missing, f"README's architecture misses {missing}"
    assert listed <= entries, f"README's architecture lists what piko/ no longer has: {sorted(listed - entries)}"
