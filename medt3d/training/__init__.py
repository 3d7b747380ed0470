"""Training: the MONAI engine with medt3d's handlers, losses and optimiser."""
