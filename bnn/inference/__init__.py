"""Inference methods, one module per family (``optimize``: MLE and MAP)."""
