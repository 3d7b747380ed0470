"""Defaults of ``medt3d distill``, in a module without torch so that the command line starts quickly."""

#: Hinton et al.: a soft temperature, the teacher's term weighted as much as the labels'.
DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5
