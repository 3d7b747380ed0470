"""``medt3d convert SOURCE OUTPUT``: DICOM series, RTSTRUCT or SEG to NIfTI; a label NIfTI to RTSTRUCT or SEG."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medt3d.commands.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert`` command."""
    p = sub.add_parser(
        "convert", help="convert DICOM series, RTSTRUCT and SEG to NIfTI, and labels to RTSTRUCT or SEG",
        description="Convert one file, keeping its geometry exactly: a DICOM series folder to a NIfTI image; an "
                    "RTSTRUCT (beside or inside its series folder) or a DICOM SEG (with --reference) to a label "
                    "NIfTI on the series' grid; a label NIfTI to an RTSTRUCT or DICOM SEG that references the "
                    "series given with --reference. Class names come from data.labels (--config/--set); an RTSTRUCT's "
                    "ROIs and a SEG's segments become the class of their name, or as data.roi_names maps them. The output is written whole or not at all, never over an input.")
    p.add_argument("source", help="DICOM series folder, RTSTRUCT or SEG .dcm file, or label .nii.gz/.nrrd")
    p.add_argument("output", help="file to write: .nii.gz, or .dcm with --to rtstruct|seg")
    p.add_argument("--to", choices=("nifti", "rtstruct", "seg"),
                   help="output format (default: nifti for a .nii/.nii.gz OUTPUT)")
    p.add_argument("--reference", metavar="SERIES_DIR",
                   help="the DICOM series folder a SEG or a label NIfTI lies on")
    p.add_argument("--series-uid", metavar="UID",
                   help="the SeriesInstanceUID to read where a folder holds several series")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert and say what was written."""
    from medt3d.data.readers.rtstruct import RoiMap
    from medt3d.inference.conversions import convert
    from medt3d.label_table import label_table

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines list every copied module
    cfg = config_from_args(args)
    line = convert(Path(args.source), Path(args.output), to=args.to,
                   reference=Path(args.reference) if args.reference else None, series_uid=args.series_uid,
                   table=label_table(cfg), rois=RoiMap.from_config(cfg.data))
    print(line)
    return 0
