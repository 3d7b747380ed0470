"""``medt3d infer``: segment scans with a trained model (NIfTI labels, JSON sidecars, optional DICOM SEG)."""

from __future__ import annotations

import argparse
import sys

from medt3d.config import (
    BLEND_MODES,
    ENGINES,
    OUTPUT_FORMATS,
    OUTPUT_NAMINGS,
    PRECISIONS,
    RESAMPLE_MODES,
    WHOLE_SCAN,
    WINDOW_PADDING_MODES,
)
from medt3d.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``infer`` command."""
    p = sub.add_parser(
        "infer", help="segment scans with a trained model",
        description="Predict whole scans by sliding window and write, per case, <case>_seg.nii.gz on the scan's "
                    "own grid and a <case>_seg.json sidecar (labels, colours, volumes in mL, time, model). "
                    "Settings default to the model's config. Under torchrun the cases are split across ranks. "
                    "Exit code 1 when any case failed (see OUT_DIR/summary.json).")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="NIfTI/NRRD file, DICOM series folder, or a folder searched for them")
    p.add_argument("--model", nargs="+", metavar="MODEL",
                   help="checkpoint (.pt), training run folder, or bundle (folder or .zip) from medt3d export "
                        "(required unless --merge); several, or a cross-validation folder (medt3d train --folds), "
                        "make an ensemble: their probabilities are averaged (TTA included), one model after "
                        "another, and a cross-validation folder's postprocessing is applied")
    p.add_argument("--output", help="output folder (OUT_DIR; required unless --merge)")
    p.add_argument("--shard", metavar="I/N",
                   help="segment only shard I of N (1 <= I <= N) of the cases, chosen by a hash of each case's name: "
                        "N jobs with the same inputs and OUT_DIR cover the cohort once; the last to finish writes "
                        "the merged summary.json and volumes.csv")
    p.add_argument("--merge", metavar="OUT_DIR",
                   help="only write OUT_DIR's summary.json and volumes.csv from the shards finished there")
    p.add_argument("--device", help="cpu | cuda | cuda:N | mps | auto (default: the model's infer.device)")
    p.add_argument("--roi-size", nargs="+", metavar="SIZE", type=_window,
                   help="sliding-window size in voxels, X Y Z, or 'whole' for the whole scan in one pass (default: "
                        "the model's infer.roi_size, else patch.roi_size)")
    p.add_argument("--overlap", type=float, help="window overlap in [0, 1) (default: infer.overlap)")
    p.add_argument("--mode", choices=BLEND_MODES, help="window blending (default: infer.mode)")
    p.add_argument("--padding-mode", choices=WINDOW_PADDING_MODES,
                   help="how a scan thinner than the training patch is filled up to it: replicate (edge slices), "
                        "reflect or constant (default: the model's infer.padding_mode)")
    p.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: infer.sw_batch_size)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation by flips (default: infer.tta_flips)")
    p.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the largest connected component per class (default: infer.largest_component)")
    p.add_argument("--save-probabilities", action=argparse.BooleanOptionalAction, default=None,
                   help="also write <case>_probs.nii.gz (default: infer.save_probabilities)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 | bf16 | fp16 on --engine torch; fp32 | fp16 (GPU) | int8 on --engine onnxruntime "
                        "(default: infer.precision)")
    p.add_argument("--engine", choices=ENGINES,
                   help="what runs the network: torch, or onnxruntime (a bundle's models/model.onnx, "
                        "model_fp16.onnx or model_int8.onnx by --precision; see medt3d export --onnx) "
                        "(default: infer.engine)")
    p.add_argument("--resample", choices=RESAMPLE_MODES,
                   help="back to the scan's grid: labels (nearest) or probabilities (linear, then argmax); "
                        "default: infer.resample")
    p.add_argument("--output-format", nargs="+", choices=OUTPUT_FORMATS, default=["nifti"], metavar="FORMAT",
                   help="label formats: nifti (<case>_seg.nii.gz, always written), seg-nrrd (<case>_seg.seg.nrrd, "
                        "a 3D Slicer segmentation with names, colours and codes), dicom-seg (<case>_seg.dcm, a "
                        "DICOM Segmentation referencing the series, for DICOM inputs), rtstruct (<case>_rtstruct.dcm, a "
                        "DICOM RTSTRUCT of one ROI per class referencing the series, for DICOM inputs)")
    p.add_argument("--dicom-seg", action="store_true", help="same as adding dicom-seg to --output-format")
    p.add_argument("--statistics", action="store_true",
                   help="per-structure intensity statistics (mean, SD, percentiles; HU for CT) in each sidecar "
                        "and their means in OUT_DIR/volumes.csv")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave cases whose sidecar already exists in OUT_DIR (continue an interrupted batch)")
    p.add_argument("--series-uid", metavar="UID",
                   help="the SeriesInstanceUID to read in DICOM folders that hold several series (a folder with "
                        "several and no --series-uid fails its case, listing them)")
    p.add_argument("--output-naming", choices=OUTPUT_NAMINGS, default="medt3d",
                   help="label file names: medt3d (CASE_seg.nii.gz, default) or nnunet (CASE.nii.gz, as nnU-Net's "
                        "tools pair predictions with labelsTr)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _window(text: str) -> int | str:
    if text == WHOLE_SCAN:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a window edge in voxels nor {WHOLE_SCAN!r}") from None


def _roi_size(values: list[int | str] | None) -> list[int] | str | None:
    """``--roi-size``: three edges, or ``whole`` alone."""
    if values is None:
        return None
    if values == [WHOLE_SCAN]:
        return WHOLE_SCAN
    if len(values) != 3 or any(isinstance(v, str) for v in values):
        raise InputError(f"--roi-size takes three window edges X Y Z or {WHOLE_SCAN!r}, got "
                         f"{' '.join(str(v) for v in values)}; pass --roi-size whole or three integers")
    return [int(v) for v in values]


def run(args: argparse.Namespace) -> int:
    """Run the command; returns 1 when any case failed."""
    from medt3d.distributed import is_main_process
    from medt3d.inference.batch import InferOptions, run_inference
    from medt3d.inference.shards import merge_folder, parse_shard

    if args.merge:
        if args.inputs or args.model or args.output or args.shard:
            raise InputError("--merge OUT_DIR takes no INPUT, --model, --output or --shard: it only merges the "
                             "shards' results already in OUT_DIR; drop those arguments")
        return _report(merge_folder(args.merge))
    missing = [name for name, value in (("INPUT", args.inputs), ("--model", args.model), ("--output", args.output))
               if not value]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: medt3d infer INPUT... --model MODEL --output OUT_DIR "
                         "(or medt3d infer --merge OUT_DIR); pass them")

    options = InferOptions(
        device=args.device, roi_size=_roi_size(args.roi_size), overlap=args.overlap, mode=args.mode,
        padding_mode=args.padding_mode, sw_batch_size=args.sw_batch_size, tta_flips=args.tta,
        largest_component=args.largest_component,
        save_probabilities=args.save_probabilities, precision=args.precision, engine=args.engine,
        output_formats=[*args.output_format, *(["dicom-seg"] if args.dicom_seg else [])],
        statistics=args.statistics, resample=args.resample,
        skip_existing=args.skip_existing, progress=not args.no_progress, series_uid=args.series_uid,
        shard=parse_shard(args.shard) if args.shard else None, output_naming=args.output_naming,
    )
    model = args.model[0] if len(args.model) == 1 else args.model
    summary = run_inference(args.inputs, args.output, model=model, options=options)
    if summary.get("world_size", 1) > 1 and not is_main_process():
        return int(summary["exit_code"])
    return _report(summary)


def _report(summary: dict) -> int:
    """Print the outcome of a batch (or of a shard, or of a merge); its exit code."""
    shard = summary.get("shard")
    if shard and "shards" not in summary:
        print(f"medt3d infer: shard {shard[0]}/{shard[1]}: ", end="")
    else:
        print("medt3d infer: ", end="")
    shards = summary.get("shards")
    if shards and shards["missing"]:
        print(f"(shards {shards['missing']} of {shards['count']} not finished) ", end="")
    print(f"{summary['done']} done, {summary['skipped']} skipped, {summary['n_failed']} failed "
          f"of {summary['n_cases']} case(s); results in {summary['output']}")
    for failure in summary["failed"]:
        print(f"  FAILED {failure['case']}: {failure['error']}", file=sys.stderr)
    if summary["failed"]:
        print(f"  summary: {summary['output']}/summary.json", file=sys.stderr)
    return int(summary["exit_code"])

