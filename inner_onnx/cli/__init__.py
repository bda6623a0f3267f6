"""The command line: parses options, calls the library, prints."""

from inner_onnx.cli.app import main

__all__ = ["main"]
