"""Cross-validation like nnU-Net's: the folds in one folder, out-of-fold predictions, the postprocessing they choose.

It trains (:mod:`medt3d.training`), predicts (:mod:`medt3d.inference`) and scores (:mod:`medt3d.evaluation`),
so it sits above both stages, beside ``bench`` and ``bundle``.
"""

from medt3d.crossval.run import parse_folds, train_folds

__all__ = ["parse_folds", "train_folds"]
