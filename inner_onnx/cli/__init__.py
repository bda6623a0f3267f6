"""The command line: parses options, calls the library, prints. One module per command."""

from inner_onnx.cli import evaluate, inspect, localize, repair, scan
from inner_onnx.cli.app import app, main

__all__ = ["app", "evaluate", "inspect", "localize", "main", "repair", "scan"]
