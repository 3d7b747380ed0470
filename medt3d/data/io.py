"""Deprecated: the readers moved to :mod:`medt3d.data.readers` (one module per format behind one registry).

This module only re-exports the readers' public names, because MONAI bundles exported by earlier versions
of medt3d name ``medt3d.data.io`` in their configs (``$import medt3d.data.io``, ``medt3d.data.io.LoadVolumed``).
New code imports :mod:`medt3d.data.readers`.
"""

from medt3d.data.readers import *  # noqa: F403
from medt3d.data.readers import __all__  # noqa: F401
