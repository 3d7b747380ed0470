"""Evaluation: per-case metrics, ``medt3d evaluate`` and its plots."""
