"""Figures through onnxruntime: metrics, evaluation sets, adversarial attacks."""
