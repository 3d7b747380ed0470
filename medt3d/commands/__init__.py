"""Command modules of the ``medt3d`` CLI, one per command."""
