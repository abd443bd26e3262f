"""Training and export: everything that needs torch, fair-esm or pytorch-crf.

Nothing outside this package imports torch (tested); prediction runs on ONNX Runtime + numpy.
"""
