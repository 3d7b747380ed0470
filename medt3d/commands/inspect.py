"""``medt3d inspect DATA``: per-case geometry and classes, dataset fingerprint, suggested plan, overview PNG."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from medt3d.commands.common import add_set_arg
from medt3d.config import CT_WINDOWS, config_from_dict, config_to_dict, load_config
from medt3d.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` command."""
    from medt3d.data.fingerprint import DEFAULT_MEMORY_GB

    parser = subparsers.add_parser(
        "inspect",
        help="dataset fingerprint, suggested spacing/patch/window, overview PNG",
        description=(
            "Read every case of DATA (any layout medt3d knows), report shape, spacing, orientation, "
            "intensities and label classes per case and for the dataset, suggest a config fragment "
            "(target spacing, patch size for a memory budget, CT window) and, when asked (--png-dir or --png), "
            "write an overview PNG."
        ),
    )
    parser.add_argument("data", help="data folder (labels optional), dataset.json, datalist JSON, or one scan (NIfTI, NRRD or DICOM series folder)")
    parser.add_argument("--json", action="store_true", help="print the fingerprint and plan as JSON")
    parser.add_argument("--png-dir", type=Path, default=None, metavar="DIR",
                        help="write the overview PNG into DIR (created) as <DATA name>_overview.png; without it "
                             "(or --png) no PNG is written")
    parser.add_argument("--png", type=Path, default=None, metavar="FILE", help="write the overview PNG as FILE")
    parser.add_argument("--no-png", action="store_true", help="write no overview PNG (the default)")
    parser.add_argument("--series-uid", metavar="UID",
                        help="the SeriesInstanceUID to read in DICOM folders that hold several series")
    parser.add_argument("--memory-gb", type=float, default=DEFAULT_MEMORY_GB,
                        help=f"memory for one training step, for the patch size (default {DEFAULT_MEMORY_GB:g})")
    parser.add_argument("--config", default=None,
                        help="config (preset or YAML) for the class names, modality, batch size and patches per volume")
    add_set_arg(parser)
    parser.set_defaults(func=run)


def _png_path(args: argparse.Namespace) -> Path | None:
    """The overview PNG to write: ``--png FILE``, ``--png-dir DIR``/<DATA name>_overview.png, or none."""
    from medt3d.data.readers import strip_suffix

    if args.png is not None and args.png_dir is not None:
        raise InputError("--png names the PNG file and --png-dir its folder: pass one of them")
    if args.no_png or (args.png is None and args.png_dir is None):
        return None
    if args.png is not None:
        return args.png
    data = Path(args.data)
    name = strip_suffix(data.resolve()) if data.is_file() else data.resolve().name
    args.png_dir.mkdir(parents=True, exist_ok=True)
    return args.png_dir / f"{name.removesuffix('.json') or 'data'}_overview.png"


def _fmt_num(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def format_report(fp: dict, plan: dict, memory_gb: float, patches: int, png: Path | None) -> str:
    """Readable text of a fingerprint and plan."""
    from medt3d.data.fingerprint import PERCENTILES, estimate_training_memory_gb

    pct = "/".join(f"p{p:g}" for p in PERCENTILES)
    rows = []
    names = fp["labels"]
    for case in fp["cases"]:
        classes = ", ".join(
            f"{names[int(k)] if int(k) < len(names) else k}={v:,}" for k, v in case.get("classes", {}).items()
        ) or "-"
        inten = case["intensity"]
        rows.append([
            case["name"],
            "x".join(map(str, case["shape"])),
            "x".join(f"{s:.3f}" for s in case["spacing"]),
            case["orientation"],
            "/".join(_fmt_num(inten[f"p{p:g}"]) for p in PERCENTILES) if f"p{PERCENTILES[0]:g}" in inten else "-",
            classes,
        ])
    out = []
    where = f", layout {fp['layout']}" if fp.get("layout") else ""
    out.append(f"dataset: {fp['n_cases']} case(s){where}, modality {fp['modality']}")
    out.append(_table(rows, ["case", "shape", "spacing (mm)", "orient", f"intensity {pct}", "label voxels"]))
    out.append("")
    out.append("summary (RAS axis order):")
    out.append(f"  median spacing: {' x '.join(f'{s:.3f}' for s in fp['median_spacing'])} mm "
               f"(range {', '.join(f'{a:.3f}-{b:.3f}' for a, b in fp['spacing_range'])})")
    out.append(f"  median shape: {' x '.join(f'{s:g}' for s in fp['median_shape'])} voxels "
               f"({' x '.join(f'{s:.0f}' for s in fp['physical_size_mm'])} mm)")
    fg = fp.get("foreground_intensity") or {}
    if fg:
        label = "CT foreground intensity (HU)" if fp["modality"] == "CT" else "foreground intensity"
        out.append(f"  {label} {pct}: {' / '.join(_fmt_num(fg[f'p{p:g}']) for p in PERCENTILES)} "
                   f"(mean {fg['mean']:.1f}, std {fg['std']:.1f})")
    if fp["classes"]:
        out.append("  classes:")
        for name, c in fp["classes"].items():
            share = f", {100 * c['foreground_fraction']:.1f} % of foreground" if c["foreground_fraction"] is not None else ""
            out.append(f"    {c['value']} {name}: {c['voxels']:,} voxels ({100 * c['fraction']:.2f} % of all{share}), "
                       f"in {c['cases']}/{fp['n_cases']} case(s)")
    if fp["problems"]:
        out.append("")
        out.append(f"{len(fp['problems'])} case(s) could not be read:")
        out += [f"  - {p}" for p in fp["problems"]]
    out.append("")
    roi = plan["patch"]["roi_size"]
    out.append(f"suggested config fragment (memory budget {memory_gb:g} GB, {patches} patches per step, "
               f"estimated {estimate_training_memory_gb(roi, patches):.1f} GB):")
    fragment = yaml.safe_dump(plan, sort_keys=False, default_flow_style=None).rstrip()
    if "window" in plan.get("preprocess", {}):
        preset = plan["preprocess"].get("ct_window")
        width, level = CT_WINDOWS[preset]
        fragment += (f"\n# preprocess.window spans the foreground's {PERCENTILES[0]:g}-{PERCENTILES[-1]:g} percentiles; "
                     f"the closest preset is '{preset}' (width {width:g}, level {level:g})")
    out += ["  " + line for line in fragment.splitlines()]
    if png is not None:
        out.append("")
        out.append(f"overview PNG: {png}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    """Fingerprint DATA, print the report (or JSON) and write the overview PNG."""
    from medt3d.data.datalist import build_datalist
    from medt3d.data.fingerprint import fingerprint_dataset, suggest_plan
    from medt3d.data.overview import write_overview
    from medt3d.data.readers.rtstruct import RoiMap
    from medt3d.data.transforms import window_bounds

    data = Path(args.data)
    cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else None
    if args.memory_gb <= 0:
        raise InputError(f"--memory-gb must be positive, got {args.memory_gb}; pass the GPU's memory in GB")
    datalist = build_datalist(data, require_labels=False, series_uid=args.series_uid)
    png = _png_path(args)
    labels = cfg.data.labels if cfg is not None and args.config else None
    modality = cfg.data.modality if cfg is not None and args.config else None
    rois = RoiMap.from_config((cfg or load_config(None)).data)  # RTSTRUCT labels: which class each ROI becomes
    fp = fingerprint_dataset(datalist, modality=modality, labels=labels, progress=sys.stderr.isatty(), rois=rois)
    plan = suggest_plan(fp, memory_budget_gb=args.memory_gb, cfg=cfg)
    # the fragment must be a valid config on top of the one given (or the defaults)
    base = config_to_dict(cfg) if cfg is not None else {}
    config_from_dict({**base, **{k: {**base.get(k, {}), **v} for k, v in plan.items()}}, source="suggested plan")
    used = cfg or load_config(None)
    patches = used.train.batch_size * used.patch.num_samples
    if png is not None:
        # CT is shown through the config's window (what training sees); MR through its own percentiles
        window = window_bounds(used) if fp["modality"] == "CT" else None
        write_overview([{"name": c["name"], "image": c["image"], "label": c.get("label"),
                         "series_uid": c.get("series_uid")} for c in fp["cases"]],
                       png, window=window, labels=fp["labels"], rois=rois)
    if args.json:
        result: dict[str, Any] = {"fingerprint": fp, "plan": plan, "png": str(png) if png else None}
        print(json.dumps(result, indent=2))
    else:
        print(format_report(fp, plan, args.memory_gb, patches, png))
    return 1 if fp["problems"] else 0
