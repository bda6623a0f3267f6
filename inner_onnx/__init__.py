"""inner-onnx: repair ONNX classifiers by optimizing only the neurons responsible (INNER)."""

__version__ = "0.1.0"
