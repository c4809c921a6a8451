"""Build the focus model: degrade sharp photos, train the CNN, export to ONNX, write its card.

Needs the [train] extra (tensorflow-cpu, tf2onnx, scipy).  Entry point: ``python -m train``.
"""
