"""Saved models: the checkpoint format, run-folder and bundle layout, safe archives, and loading any of them."""
