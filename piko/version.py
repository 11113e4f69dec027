"""piko's version, in a module of its own: anything may read it without importing the package's
lazy re-exports (piko/__init__), so reading it can never close an import cycle."""

__version__ = "0.2.0"
