"""The release of this package, importable from any layer (the package root re-exports it)."""

__version__ = "0.8.0"
