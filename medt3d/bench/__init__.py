"""Benchmarks: network speed, whole-scan inference, reduced precision and quality comparisons."""
