"""The package version (one place, read by the package and by saved fits)."""

__version__ = "0.1.0"
