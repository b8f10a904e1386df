"""The package version, in a module of its own so that manifests can record it without importing asymret."""
__version__ = "0.1.0"
