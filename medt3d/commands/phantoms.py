"""``medt3d phantoms OUT``: write synthetic CT phantoms in the train/val(/test) folder layout."""

from __future__ import annotations

import argparse

from medt3d.data.phantoms import CLASS_NAMES, DEFAULT_SHAPE, write_phantom_dataset

# Default case counts of the command line (the Python API has no defaults for them).
_N_TRAIN, _N_VAL = 8, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantoms`` command."""
    parser = subparsers.add_parser(
        "phantoms",
        help="write synthetic CT phantoms (NIfTI, optionally DICOM)",
        description=(
            "Write deterministic CT-like phantoms (HU) with labels "
            f"{', '.join(f'{i}={n}' for i, n in enumerate(CLASS_NAMES))} as "
            "OUT/train/images|masks, OUT/val/images|masks and OUT/test/images|masks."
        ),
    )
    parser.add_argument("out", help="output folder (must not exist or be empty)")
    parser.add_argument("--n-train", type=int, default=_N_TRAIN, help=f"training cases (default {_N_TRAIN})")
    parser.add_argument("--n-val", type=int, default=_N_VAL, help=f"validation cases (default {_N_VAL})")
    parser.add_argument("--n-test", type=int, default=0, help="held-out test cases (default 0)")
    parser.add_argument(
        "--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=list(DEFAULT_SHAPE),
        help=f"volume size in voxels (default {' '.join(map(str, DEFAULT_SHAPE))})",
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--dicom", action="store_true", help="also write each image as a DICOM series in OUT/dicom/")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the phantoms and say where."""
    out = write_phantom_dataset(
        args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
        shape=tuple(args.shape), seed=args.seed, dicom=args.dicom,
    )
    total = args.n_train + args.n_val + args.n_test
    extra = " and DICOM series" if args.dicom else ""
    print(f"wrote {total} phantoms (train {args.n_train}, val {args.n_val}, test {args.n_test}) as NIfTI{extra} to {out}")
    return 0
