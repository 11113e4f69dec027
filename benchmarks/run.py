"""The suite runner: every benchmark, each in its own subprocess, under one time budget.

    python -m benchmarks [--quick] [--only NAME[,NAME]] [--repeat N] [--budget-s S]
                         [--json FILE] [--markdown [FILE]] [--plot FILE | --no-plot] [--strict]

Each `benchmarks/bench_NAME.py` exposes `run(quick=False) -> list[dict]`; a module whose
`run` also takes `repeat` takes its samples itself (fresh processes inside), the others are
run `--repeat` times (default 3, 2 with --quick) while the budget allows. A module that
crashes or overruns its share becomes an error row and the suite goes on; the exit status
is non-zero only if the runner itself fails, or with --strict. Nothing is installed: a
missing peer is named with the command that installs it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import inspect
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ORDER = ("triggers", "scheduler", "store", "reconcile", "writer", "http", "offload", "dask", "footprint", "mysql", "cluster",
         "map", "workflow")
PEERS = {  # import name -> what it is compared against
    "apscheduler": "APScheduler 3.11 (scheduler, footprint)", "croniter": "croniter (triggers)",
    "cronsim": "cronsim (triggers)", "uvicorn": "uvicorn (http)", "fastapi": "FastAPI (http)",
    "prometheus_client": "prometheus_client (http)",
    "sqlalchemy": "SQLAlchemy, for APScheduler's SQLAlchemyJobStore on SQLite (scheduler)",
}
INSTALL_HINT = "pip install '.[bench]'"
# Seconds one run of each module takes on 2 cores (quick, full): what is kept back for the
# modules still to come when deciding whether another repeat fits. Unknown modules: 15 / 45.
ESTIMATE_S = {
    "triggers": (2, 8), "scheduler": (55, 175), "store": (8, 15), "reconcile": (4, 15), "writer": (3, 35),
    "http": (25, 50),
    "offload": (3, 8), "dask": (7, 20), "footprint": (7, 20), "mysql": (23, 60), "cluster": (60, 120),
    "map": (25, 60), "workflow": (3, 5),
}


def estimate_s(name: str, quick: bool) -> float:
    return float(ESTIMATE_S.get(name, (15, 45))[0 if quick else 1])


def available() -> list[str]:
    """Bench module names, in the suite's order, then any others found."""
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def missing_peers() -> list[str]:
    return [name for name in PEERS if importlib.util.find_spec(name) is None]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if hasattr(os, "getloadavg"):
        info["load_at_start"] = round(os.getloadavg()[0], 2)
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


# -- one module in a subprocess -------------------------------------------------------------------


def run_child(name: str, quick: bool, repeat: int | None, timeout_s: float) -> tuple[list[dict[str, Any]], float]:
    """Run bench_NAME in a fresh interpreter; its rows, or one error row. Returns (rows, seconds)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "rows.json", Path(tmp) / "output.txt"
        cmd = [sys.executable, "-m", "benchmarks.run", "--child", name, "--out", str(out)]
        cmd += ["--quick"] if quick else []
        cmd += ["--repeat", str(repeat)] if repeat else []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own process group: a timeout ends all of it
            try:
                code: int | None = proc.wait(max(1.0, timeout_s))
            except subprocess.TimeoutExpired:
                code = None
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        elapsed = time.monotonic() - started
        if code is None:
            return [_error(name, f"stopped after {elapsed:.0f}s: over its share of the time budget")], elapsed
        if code != 0 or not out.exists():
            tail = [x for x in log.read_text(errors="replace").splitlines() if x.strip()][-3:]
            return [_error(name, f"exit status {code}: {' / '.join(tail) or 'no output'}")], elapsed
        return json.loads(out.read_text()), elapsed


def _error(name: str, message: str) -> dict[str, Any]:
    return {"bench": name, "case": "", "error": message}


def child_main(name: str, quick: bool, repeat: int | None, out: str) -> None:
    """Inside the subprocess: import the module, run it, write its rows as JSON."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    kwargs: dict[str, Any] = {"quick": quick}
    if repeat and "repeat" in inspect.signature(module.run).parameters:
        kwargs["repeat"] = repeat
    rows = module.run(**kwargs)
    Path(out).write_text(json.dumps(rows, default=str))


def repeats_itself(name: str) -> bool:
    """True when bench_NAME's run() takes `repeat` (read from the source, without importing it)."""
    import ast

    tree = ast.parse((HERE / f"bench_{name}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            return any(a.arg == "repeat" for a in node.args.args + node.args.kwonlyargs)
    return False


# -- the suite ---------------------------------------------------------------------------------------


def run_suite(names: list[str], *, quick: bool, repeat: int | None, budget_s: float,
              progress: Any = sys.stderr) -> list[dict[str, Any]]:
    """Every module once if the budget allows, then as many of the wanted repeats as fit.

    Before each run, the estimated first run of every module still to come is kept back. A
    module's first run may use what is not kept back, and at least twice its own estimate; a
    repeat runs only if what the first run took (plus 20%) fits in what is not kept back.
    """
    deadline = time.monotonic() + budget_s
    wanted = repeat or (2 if quick else 3)
    rows: list[dict[str, Any]] = []
    for index, name in enumerate(names):
        reserve = sum(estimate_s(n, quick) for n in names[index + 1:])
        if deadline - time.monotonic() <= 0:
            rows.append(_error(name, "not run: the time budget was spent"))
            continue
        inside = repeats_itself(name)
        runs = 1 if inside else wanted
        done, last_s = 0, 0.0
        for attempt in range(runs):
            total_left = deadline - time.monotonic()
            if attempt and last_s * 1.2 > total_left - reserve:
                rows.append({"bench": name, "case": "", "skipped":
                             f"ran {done} of {runs} repeats: the rest would exceed the time budget"})
                break
            own = total_left - reserve
            timeout = min(total_left, max(own, 2 * estimate_s(name, quick))) if attempt == 0 else own
            print(f"[{name}] run {attempt + 1}/{runs} ...", file=progress, flush=True)
            got, last_s = run_child(name, quick, repeat if inside else None, max(timeout, 1.0))
            print(f"[{name}] run {attempt + 1}/{runs} took {last_s:.1f}s", file=progress, flush=True)
            if attempt and got and "over its share" in got[0].get("error", ""):
                rows.append({"bench": name, "case": "", "skipped":  # the earlier runs stand
                             f"ran {done} of {runs} repeats: repeat {attempt + 1} was stopped at the time budget"})
                break
            rows.extend(got)
            if any("error" in r for r in got):
                break
            done += 1
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads; budget 120 s")
    parser.add_argument("--only", help="comma-separated bench names (" + ", ".join(available()) + ")")
    parser.add_argument("--repeat", type=int, help="runs (or fresh processes) per figure; default 3, quick 2")
    parser.add_argument("--budget-s", type=float, help="time budget for the whole suite (default 600, quick 120)")
    parser.add_argument("--json", metavar="FILE", help="write machine-readable results to FILE")
    parser.add_argument("--markdown", metavar="FILE", nargs="?", const="-", help="print (or write) a Markdown table")
    parser.add_argument("--plot", metavar="FILE", default=str(HERE / "results" / "fire_lateness.png"),
                        help="PNG of fire lateness vs number of jobs (default: %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--strict", action="store_true", help="exit non-zero when a benchmark fails")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def select(only: str | None) -> list[str]:
    names = available()
    if not only:
        return names
    wanted = [n.strip().removeprefix("bench_") for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(names)}")
    return [n for n in names if n in wanted]


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:  # also run as a script: python benchmarks/run.py
        sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.quick, args.repeat, args.out)
        return 0
    from benchmarks import report

    names = select(args.only)
    info = machine()
    command = "python -m benchmarks" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None
                                                                              else sys.argv[1:]))
    print(f"piko benchmarks on {report.machine_line(info)}; load {info.get('load_at_start', '?')}"
          f"{'; commit ' + info['commit'] if info.get('commit') else ''}")
    missing = missing_peers()
    if missing:
        print(f"peers missing (their lines show no peer): {', '.join(PEERS[m] for m in missing)}; "
              f"install them with: {INSTALL_HINT}")
    budget_s = args.budget_s or (120.0 if args.quick else 600.0)
    print(f"running {', '.join(names)} within {budget_s:.0f}s{' (quick)' if args.quick else ''}", flush=True)
    started = time.monotonic()
    raw = run_suite(names, quick=args.quick, repeat=args.repeat, budget_s=budget_s)
    elapsed = time.monotonic() - started
    summary = report.summarise(raw)
    print()
    print(report.render_table(summary))
    slower = report.slower_lines(summary)
    if slower:
        print("\npiko is slower than its peer on: " + "; ".join(
            f"[{r['bench']}] {r['case']}: {r['metric'] or r['unit']} ({report.fmt_ratio(r['ratio'])})" for r in slower))
    print(f"\nsuite took {elapsed:.0f}s")
    _write_outputs(args, summary, raw, info, command, missing, elapsed)
    errors = [r for r in summary if "error" in r]
    return 1 if args.strict and errors else 0


def _write_outputs(args: argparse.Namespace, summary: list[dict[str, Any]], raw: list[dict[str, Any]],
                   info: dict[str, Any], command: str, missing: list[str], elapsed: float) -> None:
    from benchmarks import report

    if args.markdown:
        text = report.render_markdown(summary, info, command)
        if args.markdown == "-":
            print("\n" + text)
        else:
            Path(args.markdown).write_text(text + "\n")
            print(f"Markdown table written to {args.markdown}")
    if args.json:
        payload = {"machine": info, "command": command, "elapsed_s": round(elapsed, 1), "quick": args.quick,
                   "missing_peers": missing, "results": summary, "raw": raw}
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str) + "\n")
        print(f"JSON written to {args.json}")
    if not args.no_plot:
        from benchmarks import plot

        path = plot.lateness_chart(summary, args.plot)
        if path:
            print(f"plot written to {path}")


if __name__ == "__main__":
    sys.exit(main())
