"""autodiscover: import every `<package>...<module_name>` module so its @app.job lines run."""

from __future__ import annotations

import importlib
import pkgutil

from piko.errors import ConfigError


def autodiscover(package: str, module_name: str = "jobs") -> list[str]:
    """Import `package.<module_name>` and every `*.<module_name>` module below it; return their names."""
    try:
        root = importlib.import_module(package)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"autodiscover: package {package!r} cannot be imported: {exc}") from None
    found: list[str] = []
    if getattr(root, "__name__", "").rsplit(".", 1)[-1] == module_name:
        found.append(root.__name__)
    paths = getattr(root, "__path__", None)
    if paths is None:
        return found
    for info in pkgutil.walk_packages(paths, prefix=f"{package}."):
        if info.name.rsplit(".", 1)[-1] == module_name:
            importlib.import_module(info.name)
            found.append(info.name)
    return found
