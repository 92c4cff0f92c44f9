"""The package version, in a module of its own so every layer can read it without importing
the package facade (:mod:`evalkit`), which lazily imports those layers."""

__version__ = "0.1.0"
