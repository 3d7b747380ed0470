"""Inference: the sliding-window inferer, the whole-scan predictor and the batch runner behind ``medt3d infer``."""
