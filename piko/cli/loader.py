"""Find the PikoApp a CLI target names: `jobs.py`, `path/to/jobs.py:app`, `pkg.module[:app]`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from piko.errors import ConfigError, PikoError


def _import_file(path: Path) -> Any:
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem not in sys.modules else f"piko_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except PikoError:
        raise  # a bad registration already says which job and why
    except SyntaxError as exc:
        raise ConfigError(f"{exc.filename or path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the user's module failed while importing: one line, where and why
        raise ConfigError(f"importing {path} failed{_where(exc, path)}: {type(exc).__name__}: {exc}") from None
    return module


def _where(exc: BaseException, path: Path) -> str:
    """' at FILE:LINE' of the innermost frame in the jobs file (or the innermost frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()] or frames[-1:]
    return f" at {mine[-1].filename}:{mine[-1].lineno}" if mine else ""


def load_app(target: str) -> Any:
    """Import the target and return its PikoApp (the `app` attribute, or the only PikoApp in it)."""
    where, _, attr = target.partition(":")
    path = Path(where)
    if where.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"jobs file {where!r} does not exist (in {os.getcwd()})")
        module = _import_file(path)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except PikoError:
            raise
        except ModuleNotFoundError as exc:
            raise ConfigError(f"cannot import {where!r}: {exc}") from None
        except Exception as exc:
            raise ConfigError(f"importing {where!r} failed: {type(exc).__name__}: {exc}") from None
    app = _find_app(module, target, where, attr)
    app.adopt_default_jobs()  # jobs of the older module-level @job count too (and clash loudly)
    app.registry.check()  # a workflow step after a step that none declares: refused now, by name
    return app


def _find_app(module: Any, target: str, where: str, attr: str) -> Any:
    from piko.app import PikoApp
    from piko.compat import default_app
    from piko.core.registry import default_registry

    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, PikoApp):
            raise ConfigError(f"{target!r}: {attr!r} is not a PikoApp")
        return app
    if isinstance(getattr(module, "app", None), PikoApp):
        return module.app
    apps = [v for v in vars(module).values() if isinstance(v, PikoApp)]
    if len(apps) == 1:
        return apps[0]
    if len(apps) > 1:
        raise ConfigError(f"{target!r} defines several PikoApps; name one as {where}:NAME")
    if len(default_registry):
        return default_app()
    raise ConfigError(f"{target!r} defines no PikoApp and registers no job")
