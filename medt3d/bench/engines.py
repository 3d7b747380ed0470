"""``medt3d bench --infer --infer-engines``: one scan through ``medt3d infer`` on each engine and precision.

torch fp32 (the reference), torch bf16, ONNX Runtime fp32 and int8 (and fp16 on a GPU) run the same bundle on
the same scan, each in a fresh process (its own peak memory): case time, window time, peak resident memory and
the share of voxels whose label equals torch fp32's. The bundle is exported from the given model, or from a
MedT3D with random weights (the time does not depend on them), with its int8 network calibrated on windows of
``calibration`` (default: the benchmark scan itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medt3d.bench.inference import Log, _bench_volumes, _infer_settings, _spawn, write_bench_ct
from medt3d.config import Config

#: Windows that calibrate int8 here: onnxruntime's calibrator keeps every activation of a window in memory.
CALIBRATION_WINDOWS = 8

__all__ = ["CALIBRATION_WINDOWS", "ROUTES", "bench_engines", "format_engines_table"]

#: (engine, precision) measured on the CPU, torch fp32 first (the reference of the agreement).
ROUTES = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


def bench_engines(cfg: Config, output: str | Path, volume: str = "512x512x300", device: str = "cpu",
                  log: Log = print, model: str | Path | None = None,
                  calibration: str | Path | None = None,
                  spec: tuple[tuple[int, int, int], tuple[float, float, float]] | None = None) -> dict[str, Any]:
    """Time ``medt3d infer`` on one benchmark volume for each of :data:`ROUTES` (and ONNX fp16 on a GPU).

    Args:
        cfg: config of the random MedT3D (ignored with ``model``), e.g. ``ct_abdomen``.
        output: folder for the scan, bundle, predictions, logs and ``bench_engines.json``.
        volume: a name of :data:`medt3d.bench.settings.INFER_VOLUMES`.
        device: where the windows run.
        log: progress messages.
        model: a trained checkpoint or run folder to export instead of random weights.
        calibration: data whose windows calibrate int8 (default: the benchmark scan).
        spec: (size, spacing) of a volume not in ``INFER_VOLUMES`` (tests), named ``volume``.

    Returns:
        ``settings``, one row per route in ``rows``, and a Markdown ``table``.
    """
    from medt3d.io_utils import atomic_write_text
    from medt3d.models.checkpoint import save_checkpoint
    from medt3d.models.loading import load_model
    from medt3d.networks import build_network

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    shape, spacing = spec if spec is not None else _bench_volumes([volume])[volume]
    scan = write_bench_ct(out / f"ct_{volume}.nii.gz", shape, spacing)
    if model is None:
        torch.manual_seed(0)
        model = save_checkpoint(out / "engines_random.pt", network=build_network(cfg), cfg=cfg, epoch=0, iteration=0)
    else:
        cfg = load_model(model)[1]
    routes = [*ROUTES, *([("onnxruntime", "fp16")] if device.startswith("cuda") else [])]
    bundle = out / "engines_bundle"
    if not (bundle / "models" / "model_int8.onnx").is_file():
        precisions = ["int8", *(["fp16"] if len(routes) > len(ROUTES) else [])]
        log(f"engines: exporting {model} with ONNX fp32 and {' '.join(precisions)}")
        # the real command, in its own process (bench and bundle are sibling layers)
        rc, _ = _spawn("import sys; from medt3d.cli import main; sys.exit(main(sys.argv[1:]))",
                       ["export", "--model", str(model), "--output", str(bundle), "--onnx-precision", *precisions,
                        "--calibration-data", str(calibration or scan), "--calibration-windows",
                        str(CALIBRATION_WINDOWS)], out / "engines_export.log")
        if rc != 0:
            raise RuntimeError(f"medt3d export of {model} failed (exit {rc}); see {out / 'engines_export.log'}")
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    for engine, precision in routes:
        log(f"engines: {volume}: {engine} {precision} through medt3d infer")
        row, label = _route(bundle, scan, out, engine, precision, device)
        if label is not None and reference is None:
            reference = label
        if label is not None and reference is not None:
            row["agreement"] = round(float((label == reference).mean()), 6)
        rows.append({"volume": volume, **row})
    settings = {**_infer_settings(cfg, device), "model": str(model), "calibration": str(calibration or scan)}
    result = {"settings": settings, "rows": rows, "table": format_engines_table(rows)}
    atomic_write_text(out / "bench_engines.json", json.dumps(result, indent=2))
    return result


def _route(bundle: Path, scan: Path, out: Path, engine: str, precision: str, device: str
           ) -> tuple[dict[str, Any], np.ndarray | None]:
    """One route through ``medt3d infer`` in a fresh process: its row and its label (None if it failed)."""
    import nibabel as nib

    tag = f"{engine}_{precision}"
    pred_dir, report = out / f"engines_{tag}", out / f"engines_{tag}.json"
    spec = {"scans": [str(scan)], "model": str(bundle), "output": str(pred_dir), "device": device,
            "engine": engine, "precision": precision}
    rc, wall = _spawn("import json, sys; from medt3d.bench.inference import infer_worker; "
                      "infer_worker(sys.argv[1], json.loads(sys.argv[2]))",
                      [str(report), json.dumps(spec)], out / f"engines_{tag}.log")
    row: dict[str, Any] = {"engine": engine, "precision": precision, "rc": rc, "process_wall_s": round(wall, 1)}
    if rc != 0:
        return row, None
    sidecar = json.loads(next(pred_dir.glob("*_seg.json")).read_text())
    row.update(case_s=round(sidecar["seconds"], 2), window_s=round(sidecar["timings"]["windows_s"], 2),
               peak_rss_gb=round(json.loads(report.read_text())["peak_gb"], 2),
               window=sidecar.get("inference", {}).get("window_run"))
    return row, np.asarray(nib.load(next(pred_dir.glob("*_seg.nii.gz"))).dataobj)


def format_engines_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`bench_engines` rows."""
    lines = ["| volume | engine | precision | case s | windows s | peak RSS GB | labels equal to torch fp32 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["rc"] != 0:
            lines.append(f"| {r['volume']} | {r['engine']} | {r['precision']} | failed (exit {r['rc']}) | | | |")
            continue
        lines.append(f"| {r['volume']} | {r['engine']} | {r['precision']} | {r['case_s']} | {r['window_s']} | "
                     f"{r['peak_rss_gb']} | {100 * r.get('agreement', float('nan')):.3f}% |")
    return "\n".join(lines)
