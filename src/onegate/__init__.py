"""onegate: one endpoint in front of every backend."""

__version__ = "0.1.0"
