"""Maintained bundle sources (one folder each), installed as the package ``medt3d.bundles``."""
