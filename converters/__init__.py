"""Framework-to-ONNX converters that refuse to write a model onnxruntime disagrees with.

Each converter imports its framework (torch, keras) only inside itself, so the
project never depends on TensorFlow. Run them as scripts
(`python converters/torch_to_onnx.py --help`) or import their functions.
"""
