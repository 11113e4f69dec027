"""Find the PikoApp a CLI target names: `jobs.py`, `path/to/jobs.py:app`, `pkg.module[:app]`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from piko.errors import ConfigError


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
    spec.loader.exec_module(module)
    return module


def load_app(target: str) -> Any:
    """Import the target and return its PikoApp (the `app` attribute, or the only PikoApp in it)."""
    from piko.app import PikoApp, default_app
    from piko.core.registry import default_registry

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
        except ModuleNotFoundError as exc:
            raise ConfigError(f"cannot import {where!r}: {exc}") from None
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
