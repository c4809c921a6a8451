"""Data package: the shipped focus model (focus.onnx) and its card (focus.json)."""
