"""The version, alone in a module so that the package and its build read it without importing anything."""

__version__ = "0.1.0"
