"""The prompt scan's command line (``python -m python_udfs.scan``, ``pilehouse scan``)."""

from python_udfs.scan.scanner import main

__all__ = ["main"]
