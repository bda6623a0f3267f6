"""Trigger reverse-engineering from clean data (one module per defence)."""

from inner_onnx.scan.neural_cleanse import (
    ClassScan,
    NeuralCleanseSettings,
    ReversedTrigger,
    ScanResult,
    scan,
)

__all__ = ["ClassScan", "NeuralCleanseSettings", "ReversedTrigger", "ScanResult", "scan"]
