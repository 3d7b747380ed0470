"""The cases of a training run: found, split into training and validation, and checked before any work."""

from __future__ import annotations

import logging
from pathlib import Path

from medt3d.config import Config
from medt3d.data.datalist import Datalist, build_datalist
from medt3d.data.folds import choose_validation
from medt3d.data.preflight import check_cases
from medt3d.data.readers.rtstruct import RoiMap
from medt3d.errors import InputError

__all__ = ["prepare_datalist"]

logger = logging.getLogger("medt3d.train")


def prepare_datalist(cfg: Config, data_dir: str | Path, unlabelled: bool = False) -> Datalist:
    """Find the cases, split off validation if the data have none, and check everything up front.

    Args:
        cfg: the run's config.
        data_dir: a data folder or datalist JSON.
        unlabelled: training cases may come without a label (distillation: the teacher's term needs none);
            they are kept for training only, and validation is chosen among the labelled cases.

    Raises:
        DatasetError/ValueError: every problem found, each naming its file, before any training.
    """
    datalist = build_datalist(data_dir, require_labels=not unlabelled)
    if not datalist.train:
        raise InputError(f"{data_dir}: no training cases found (only {len(datalist.val)} validation and "
                         f"{len(datalist.test)} test case(s)); add training cases, or use medt3d evaluate to "
                         "score those")
    if datalist.channels is not None and len(datalist.channels) != cfg.data.in_channels:
        raise InputError(f"{data_dir}: the dataset has {len(datalist.channels)} channel(s) {datalist.channels} but "
                         f"data.in_channels is {cfg.data.in_channels}; set --set data.in_channels="
                         f"{len(datalist.channels)} (and data.channels to name them)")
    if datalist.labels is not None and list(datalist.labels) != list(cfg.data.labels):
        logger.warning("%s names the classes %s, the config's data.labels %s: label value i is trained as "
                       "data.labels[i]", data_dir, datalist.labels, cfg.data.labels)
    no_label = [case for case in datalist.train if not case.get("label")]
    datalist.train = [case for case in datalist.train if case.get("label")]
    if not datalist.val and (cfg.data.fold is not None or cfg.train.val_interval > 0):  # none at val_interval 0
        if not datalist.train:
            raise InputError(f"{data_dir}: no training case has a label, so none can be set aside for validation; "
                             "add labelled cases, or set train.val_interval=0")
        choice = choose_validation(datalist, cfg)  # nnU-Net's folds, or the seeded share (as evaluate's)
        datalist.train, datalist.val, datalist.folds = choice.train, choice.val, choice.folds
        (logger.warning if choice.same_cases else logger.info)("%s has no validation split: validating on %s",
                                                               data_dir, choice.how)
    unlabelled_val = [str(case["image"]) for case in datalist.val if not case.get("label")]
    if unlabelled_val:
        raise InputError(f"{data_dir}: validation cases need labels; none for {', '.join(unlabelled_val)}; label "
                         "them or move them to the training cases")
    if no_label:
        logger.info("%d of %d training cases have no label: they learn the teacher's soft labels only", len(no_label),
                    len(no_label) + len(datalist.train))
        datalist.train = sorted(datalist.train + no_label, key=lambda case: case["name"])
    check_cases(datalist.train + datalist.val, cfg.data.num_classes, cfg.data.in_channels,
                rois=RoiMap.from_config(cfg.data))
    return datalist
