"""``medt3d bench --infer``: whole-scan inference time and peak memory, MedT3D against MONAI UNet.

Each measurement runs in a fresh Python process so that its peak resident memory is its own:
MedT3D through the real command (``medt3d infer``), and MONAI's UNet through the same inferer
(:func:`medt3d.inference.inferer.build_sliding_window_inferer`: the window rule, overlap, blending and
window batch size) and preprocessing, followed by the same inversion onto the scan's grid and a NIfTI
write. ``--set infer.roi_size=whole`` measures the whole-scan pass of both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medt3d.bench.settings import DEFAULT_DIR, INFER_VOLUMES
from medt3d.config import Config
from medt3d.errors import InputError

__all__ = ["DEFAULT_DIR", "INFER_VOLUMES", "bench_infer", "format_infer_table", "infer_worker", "monai_unet_worker",
           "write_bench_ct"]

Log = Callable[[str], None]

def _peak_memory_gb() -> float:
    """Peak resident memory of this process in GB (since the last reset of ``VmHWM``, see
    :func:`medt3d.inference.predictor.peak_rss_mb`).

    Where ``VmHWM`` cannot be read, ``getrusage``: on Linux it would also count the parent's memory
    at the time it spawned us, which the kernel carries over at ``exec``.
    """
    import resource

    from medt3d.inference.predictor import peak_rss_mb

    peak_mb = peak_rss_mb()
    if peak_mb is not None:
        return peak_mb * 1024 * 1024 / 1e9
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def write_bench_ct(path: str | Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Path:
    """Write phantom 0 at ``shape``/``spacing`` as an int16 CT NIfTI (HU), as scanners store it."""
    from medt3d.data.nifti import write_nifti
    from medt3d.data.phantoms import make_phantom

    path = Path(path)
    if path.is_file():
        return path
    ph = make_phantom(0, shape=shape, spacing=spacing)
    hu, affine = np.clip(np.rint(ph.image), -32768, 32767).astype(np.int16), ph.affine
    del ph
    write_nifti(hu, affine, path, dtype=None)
    return path


def infer_worker(report: str, spec: dict[str, Any]) -> None:
    """Run what ``medt3d infer SCAN --model MODEL --output OUT`` runs, in this (fresh) process.

    Writes the exit code, wall time and peak memory to ``report``. ``spec`` holds ``scans`` (one,
    or several for a batch), ``model``, ``output`` and ``device`` (and optionally ``engine`` and
    ``precision``). The cases' sidecars hold each
    phase's peak (the predictor restarts the peak counter per phase), so the process peak is the
    largest of those and of what ran outside them.
    """
    from medt3d.inference.batch import InferOptions, run_inference

    start = time.perf_counter()
    summary = run_inference(spec["scans"], spec["output"], model=spec["model"],
                            options=InferOptions(device=spec["device"], progress=False, engine=spec.get("engine"),
                                                 precision=spec.get("precision")))
    rc = int(summary["exit_code"])
    phases = [v for case in Path(spec["output"]).glob("*_seg.json")
              for v in json.loads(case.read_text()).get("peak_rss_mb", {}).values()]
    peak = max([_peak_memory_gb(), *(v * 1024 * 1024 / 1e9 for v in phases)])
    Path(report).write_text(json.dumps({"rc": rc, "wall_s": time.perf_counter() - start, "peak_gb": peak}))
    sys.exit(rc)


def monai_unet_worker(report: str, spec: dict[str, Any]) -> None:
    """MONAI UNet through medt3d's inferer (MONAI's sliding window under the window rule) on one scan, in this process.

    The same work as one case of ``medt3d infer``: the config's preprocessing, the sliding window with
    the same ROI, overlap, blending and window batch, argmax, inversion onto the scan's grid and a
    NIfTI label; only the network and the inferer call differ.
    """
    from medt3d.config import config_from_dict
    from medt3d.data.nifti import write_nifti
    from medt3d.data.transforms import build_infer_transforms, build_postprocessing
    from medt3d.inference.inferer import build_sliding_window_inferer
    from medt3d.inference.predictor import peak_rss_mb
    from medt3d.networks import build_network

    start = time.perf_counter()
    cfg = config_from_dict(spec["config"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    net = build_network(cfg).to(device).eval()
    pre = build_infer_transforms(cfg)
    post = build_postprocessing(cfg, pre, argmax=True)
    phases: dict[str, float] = {}
    peaks: dict[str, float] = {}
    peak_rss_mb(reset=True)
    clock = case_start = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name], clock = round(now - clock, 3), now
        peaks[name] = peak_rss_mb(reset=True) or 0.0

    data = pre({"image": spec["scan"]}, end=1)  # LoadVolumed
    lap("load")
    data = pre(data, start=1)
    lap("preprocess")
    inferer = build_sliding_window_inferer(cfg, sw_device=device, device=torch.device("cpu"))
    with torch.no_grad():
        logits = inferer(data["image"].unsqueeze(0).to(device), net)
    lap("windows")
    pred = post({**data, "pred": logits[0]})["pred"]
    del logits
    lap("postprocess")
    write_nifti(pred, pred.affine, spec["output"], dtype=None)
    lap("write")
    now = time.perf_counter()
    Path(report).write_text(json.dumps({"rc": 0, "wall_s": now - start, "case_s": now - case_start,
                                        "phases_s": phases, "phase_peak_mb": peaks,
                                        "peak_gb": max(_peak_memory_gb(), max(peaks.values()) * 1024 * 1024 / 1e9),
                                        "window": list(inferer.last_window or ()),
                                        "parameters": sum(p.numel() for p in net.parameters())}))


def _spawn(code: str, args: list[str], log: Path) -> tuple[int, float]:
    """Run ``python -c code args`` in a fresh process; return its exit code and wall time (s)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        rc = subprocess.run([sys.executable, "-c", code, *args], stdout=handle, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - start


def bench_infer(cfg: Config, output: str | Path,
                volumes: Sequence[str] | dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] | None = None,
                device: str = "cpu", log: Log = print, batch: int = 1) -> dict[str, Any]:
    """Time whole-scan inference: MedT3D through ``medt3d infer`` and MONAI UNet through
    medt3d's inferer with the same preprocessing, ROI, overlap, blending and window
    batch, each in a fresh process (wall time of the process, its peak resident memory).

    The MedT3D weights are random (the time does not depend on them); the scans are phantoms,
    written to ``output`` once and reused by later runs.

    Args:
        cfg: config (preprocessing, ROI, inferer settings, MedT3D size), e.g. ``ct_abdomen``.
        output: folder for scans, checkpoint, predictions, logs and ``bench_infer.json``.
        volumes: names from :data:`INFER_VOLUMES` (default: all), or a mapping like it.
        device: where the windows run.
        log: progress messages.
        batch: also run ``medt3d infer`` on this many copies of each scan in one process (> 1), to
            see how a batch compares with that many single runs.

    Returns:
        ``settings``, one row per (volume, network) in ``rows``, and a Markdown ``table``.
    """
    from medt3d.config import config_to_dict
    from medt3d.io_utils import atomic_write_text
    from medt3d.models.checkpoint import save_checkpoint
    from medt3d.networks import build_network

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    medt = build_network(cfg)
    medt_params = sum(p.numel() for p in medt.parameters())
    ckpt = save_checkpoint(out / "medt3d_random.pt", network=medt, cfg=cfg, epoch=0, iteration=0)
    del medt
    unet_cfg = config_to_dict(cfg)
    unet_cfg["network"]["name"] = "unet"
    settings = _infer_settings(cfg, device)
    rows: list[dict[str, Any]] = []
    for name, (shape, spacing) in _bench_volumes(volumes).items():
        log(f"infer: writing the {name} phantom CT ({spacing} mm)")
        scan = write_bench_ct(out / f"ct_{name}.nii.gz", shape, spacing)
        base = {"volume": name, "scan_spacing_mm": list(spacing)}
        log(f"infer: {name}: MedT3D ({cfg.network.preset}) through medt3d infer")
        rows.append(_medt3d_row(cfg, name, scan, base, ckpt, medt_params, out, device, batch, log))
        log(f"infer: {name}: MONAI UNet through medt3d's inferer")
        rows.append(_unet_row(unet_cfg, name, scan, base, out, device))
        result = {"settings": settings, "rows": rows, "table": format_infer_table(rows)}
        atomic_write_text(out / "bench_infer.json", json.dumps(result, indent=2))
    for row in rows:
        if row["rc"] != 0:
            log(f"infer: {row['network']} on {row['volume']} failed (exit {row['rc']}); see the log in {out}")
    return {"settings": settings, "rows": rows, "table": format_infer_table(rows)}


def _bench_volumes(volumes: Sequence[str] | dict[str, Any] | None) -> dict[str, Any]:
    """The volumes to time: all of :data:`INFER_VOLUMES`, the named ones, or a mapping given as is."""
    if volumes is None:
        return INFER_VOLUMES
    if isinstance(volumes, dict):
        return volumes
    unknown = [v for v in volumes if v not in INFER_VOLUMES]
    if unknown:
        raise InputError(f"unknown benchmark volume(s) {unknown}; choose from {list(INFER_VOLUMES)}")
    return {v: INFER_VOLUMES[v] for v in volumes}


def _infer_settings(cfg: Config, device: str) -> dict[str, Any]:
    """What the timings depend on: the inferer's settings, the MedT3D size, the device and versions."""
    from medt3d.inference.inferer import inference_window

    window = inference_window(cfg)
    return {"roi_size": window if isinstance(window, str) else list(window), "overlap": cfg.infer.overlap, "mode": cfg.infer.mode,
            "sw_batch_size": cfg.infer.sw_batch_size, "model_spacing_mm": cfg.preprocess.spacing and
            list(cfg.preprocess.spacing), "crop_foreground": cfg.preprocess.crop_foreground,
            "medt3d_preset": cfg.network.preset, "device": device, "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "torch": torch.__version__}


def _medt3d_row(cfg: Config, name: str, scan: Path, base: dict[str, Any], ckpt: Path, medt_params: int, out: Path,
                device: str, batch: int, log: Log) -> dict[str, Any]:
    """MedT3D through ``medt3d infer`` in a fresh process (and on ``batch`` copies of the scan when > 1)."""
    pred_dir = out / f"medt3d_{name}"
    report = out / f"medt3d_{name}.json"
    spec = {"scans": [str(scan)], "model": str(ckpt), "output": str(pred_dir), "device": device}
    rc, wall = _spawn("import json, sys; from medt3d.bench.inference import infer_worker; "
                      "infer_worker(sys.argv[1], json.loads(sys.argv[2]))",
                      [str(report), json.dumps(spec)], out / f"medt3d_{name}.log")
    row = {**base, "network": f"medt3d-{cfg.network.preset}", "route": "medt3d infer", "parameters": medt_params,
           "rc": rc, "process_wall_s": round(wall, 1)}
    if rc == 0:
        sidecar = json.loads((pred_dir / f"ct_{name}_seg.json").read_text())
        row.update(peak_rss_gb=round(json.loads(report.read_text())["peak_gb"], 2),
                   case_s=round(sidecar["seconds"], 1), window_s=round(sidecar["timings"]["windows_s"], 1),
                   phases_s={k.removesuffix("_s"): v for k, v in sidecar["timings"].items()},
                   phase_peak_mb=sidecar.get("peak_rss_mb", {}),
                   window=sidecar.get("inference", {}).get("window_run"))
    if rc == 0 and batch > 1:
        log(f"infer: {name}: MedT3D on a batch of {batch} copies in one process")
        row.update(_batch_run(name, scan, spec, wall, out, batch))
    return row


def _batch_run(name: str, scan: Path, spec: dict[str, Any], wall: float, out: Path, batch: int) -> dict[str, Any]:
    """``medt3d infer`` on ``batch`` copies of the scan in one process, against one run's ``wall`` time."""
    copies = out / f"batch_{name}"
    copies.mkdir(exist_ok=True)
    for i in range(batch):
        copy = copies / f"ct_{name}_{i}.nii.gz"
        if not copy.exists():  # hard links: distinct cases (symlinks resolve to one), no copied bytes
            try:
                os.link(scan, copy)
            except OSError:
                shutil.copyfile(scan, copy)
    batch_report = out / f"medt3d_{name}_batch.json"
    spec = {**spec, "scans": [str(copies)], "output": str(out / f"medt3d_{name}_batch_out")}
    rc_b, wall_b = _spawn("import json, sys; from medt3d.bench.inference import infer_worker; "
                          "infer_worker(sys.argv[1], json.loads(sys.argv[2]))",
                          [str(batch_report), json.dumps(spec)], out / f"medt3d_{name}_batch.log")
    return dict(batch=batch, batch_rc=rc_b, batch_process_wall_s=round(wall_b, 1),
                batch_over_single=round(wall_b / wall, 2),
                batch_peak_rss_gb=round(json.loads(batch_report.read_text())["peak_gb"], 2) if rc_b == 0
                else None)


def _unet_row(unet_cfg: dict[str, Any], name: str, scan: Path, base: dict[str, Any], out: Path,
              device: str) -> dict[str, Any]:
    """MONAI's UNet through medt3d's inferer, with the same settings, in a fresh process."""
    report = out / f"unet_{name}.json"
    spec = {"config": unet_cfg, "scan": str(scan), "output": str(out / f"unet_{name}_seg.nii.gz"),
            "device": device}
    rc, wall = _spawn("import json, sys; from medt3d.bench.inference import monai_unet_worker; "
                      "monai_unet_worker(sys.argv[1], json.loads(sys.argv[2]))",
                      [str(report), json.dumps(spec)], out / f"unet_{name}.log")
    row = {**base, "network": "unet", "route": "monai unet, medt3d inferer", "rc": rc,
           "process_wall_s": round(wall, 1)}
    if rc == 0:
        measured = json.loads(report.read_text())
        row.update(parameters=measured["parameters"], peak_rss_gb=round(measured["peak_gb"], 2),
                   case_s=round(measured["case_s"], 1), window_s=round(measured["phases_s"]["windows"], 1),
                   phases_s=measured["phases_s"], phase_peak_mb=measured["phase_peak_mb"],
                   window=measured.get("window"))
    return row


PHASES = ("load", "preprocess", "windows", "postprocess", "write")


def format_infer_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`bench_infer` rows: seconds (and peak MiB) of each phase."""
    lines = ["| volume | network | route | process wall s | case s | " + " | ".join(f"{p} s (peak MiB)" for p in PHASES)
             + " | peak RSS GB | case / windows |", "|---|---|---|---|---|" + "---|" * len(PHASES) + "---|---|"]
    for r in rows:
        if r["rc"] != 0:
            lines.append(f"| {r['volume']} | {r['network']} | {r['route']} | failed (exit {r['rc']}) |"
                         + " |" * (len(PHASES) + 3))
            continue
        cells = [f"{r['phases_s'].get(p, 0):.2f} ({r['phase_peak_mb'].get(p, 0):.0f})" for p in PHASES]
        ratio = r["case_s"] / r["window_s"] if r["window_s"] else float("nan")
        lines.append(f"| {r['volume']} | {r['network']} | {r['route']} | {r['process_wall_s']} | {r['case_s']} | "
                     + " | ".join(cells) + f" | {r['peak_rss_gb']} | {ratio:.2f} |")
    batches = [r for r in rows if r.get("batch")]
    for r in batches:
        lines.append("")
        lines.append(f"Batch of {r['batch']} on {r['volume']} in one process: {r['batch_process_wall_s']} s "
                     f"({r['batch_over_single']}x one case's process), peak RSS {r['batch_peak_rss_gb']} GB.")
    return "\n".join(lines)
