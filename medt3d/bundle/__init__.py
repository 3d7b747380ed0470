"""MONAI bundle: export, the bundle's configs, docs, sources and runtime helpers."""
