"""The defects inner-onnx repairs, one Scenario object each."""
