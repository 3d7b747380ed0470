"""``medt3d bench``: benchmarks that print JSON on stdout (progress on stderr).

Modes are flags; with none given, ``--networks`` runs. To add a mode, write its function in
:mod:`medt3d.bench.networks`, add its flag and options in :func:`register` and an entry in ``_MODES``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from medt3d.commands.common import add_config_args
from medt3d.config import load_config
from medt3d.errors import InputError
from medt3d.networks.registry import NETWORKS


def _networks(cfg, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from medt3d.bench.networks import bench_networks
    from medt3d.bench.settings import NetworkBenchSettings

    defaults = NetworkBenchSettings()
    settings = NetworkBenchSettings(
        networks=tuple(args.names) if args.names else defaults.networks,
        patch=args.patch if args.patch is not None else defaults.patch,
        volume=tuple(args.volume) if args.volume else defaults.volume,
        repeats=args.repeats if args.repeats is not None else defaults.repeats,
        memory_sizes=tuple(args.memory_sizes) if args.memory_sizes else defaults.memory_sizes,
        sliding_window=not args.no_sliding_window,
        threads=args.threads,
    )
    return bench_networks(cfg, settings, log)


def _infer(cfg, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from medt3d.bench.inference import bench_infer

    if args.infer_engines:
        from medt3d.bench.engines import bench_engines
        from medt3d.bench.settings import INFER_VOLUMES

        volume = (args.infer_volumes or [list(INFER_VOLUMES)[-1]])[0]
        return bench_engines(cfg, args.infer_dir, volume=volume, device=args.infer_device, log=log,
                             model=args.infer_model, calibration=args.infer_calibration)

    return bench_infer(cfg, args.infer_dir, volumes=args.infer_volumes, device=args.infer_device, log=log,
                       batch=args.infer_batch)


def _quality(cfg, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from medt3d.bench.patients import bench_patients, holds_abdomens
    from medt3d.bench.quality import bench_quality, select_folds
    from medt3d.bench.settings import DEFAULT_CONFIG

    if args.quality_data and not holds_abdomens(args.quality_data):  # any folder of labelled patients
        return bench_patients(args.quality_data, args.quality_dir, args.quality_networks, args.budget,
                              config=args.config or DEFAULT_CONFIG, overrides=args.overrides,
                              settings=args.quality_channels, log=log, epochs=_network_epochs(args.quality_epochs))
    return bench_quality(args.quality_dir, shared_data=args.quality_data, networks=args.quality_networks,
                         budget_s=args.budget, config=args.config or DEFAULT_CONFIG, overrides=args.overrides,
                         multi_organ=args.multi_organ, folds=select_folds(args.quality_train), log=log,
                         epochs=_network_epochs(args.quality_epochs), seeds=args.quality_seeds)


def _network_epochs(pairs: list[str] | None) -> dict[str, int] | None:
    """``["medt3d=16", "unet=9"]`` as ``{"medt3d": 16, "unet": 9}``."""
    if not pairs:
        return None
    epochs: dict[str, int] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not value.isdigit() or int(value) < 1 or name not in NETWORKS:
            raise InputError(f"--quality-epochs {pair!r}: expected NETWORK=EPOCHS with NETWORK one of "
                             f"{', '.join(NETWORKS)} and EPOCHS >= 1; write it as e.g. medt3d=44 unet=28")
        epochs[name] = int(value)
    return epochs


#: mode flag (argparse dest) -> runner(cfg, args, log) -> JSON-ready dict
_MODES: dict[str, Callable[..., dict[str, Any]]] = {"networks": _networks, "infer": _infer, "quality": _quality}
#: config of each mode when --config is not given
_DEFAULT_CONFIG = "default"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    from medt3d.bench.settings import (
        DEFAULT_BUDGET_S,
        DEFAULT_DIR,
        DEFAULT_NETWORKS,
        INFER_VOLUMES,
        NETWORK_CHOICES,
        NetworkBenchSettings,
    )

    d = NetworkBenchSettings()
    p = sub.add_parser(
        "bench", help="benchmark networks (JSON on stdout)",
        description="Benchmarks printed as JSON on stdout, progress on stderr. Without a mode flag, --networks runs.",
    )
    modes = p.add_argument_group("modes")
    modes.add_argument("--networks", action="store_true",
                       help="MedT3D presets and MONAI baselines: parameters, forward and forward+backward time, "
                            "peak memory, sliding-window throughput (the default mode)")
    modes.add_argument("--infer", action="store_true",
                       help="whole-scan inference on phantom CTs: MedT3D through 'medt3d infer' and MONAI UNet "
                            "through the same inferer (same window rule, overlap, blending), wall time and peak "
                            "memory, each in a fresh process (docs/benchmarks.md uses --config ct_abdomen)")
    modes.add_argument("--quality", action="store_true",
                       help="does it learn real anatomy? Leave one patient out on the two real CT patients of "
                            "../shared/data: train MedT3D and MONAI UNet with the same config, seed and budget on "
                            "one, score the spleen on the other (Dice, HD95, volumes, overlays), both ways "
                            "(default config: ct_abdomen); with --quality-data DIR of N labelled patients, N folds "
                            "per --quality-channels setting (Dice, HD95, lesion F1, volumes)")
    add_config_args(p, default=None)
    net = p.add_argument_group("--networks options (defaults: the sizes of docs/benchmarks.md)")
    net.add_argument("--names", nargs="+", choices=NETWORK_CHOICES, metavar="NAME",
                     help=f"networks to measure (default: all of {', '.join(NETWORK_CHOICES)})")
    net.add_argument("--patch", type=int, help=f"cubic patch edge for timing/memory, also the ROI (default {d.patch})")
    net.add_argument("--volume", type=int, nargs=3, metavar=("X", "Y", "Z"),
                     help=f"sliding-window volume (default {' '.join(map(str, d.volume))})")
    net.add_argument("--repeats", type=int, help=f"timed runs after a warm-up; median reported (default {d.repeats})")
    net.add_argument("--memory-sizes", type=int, nargs="+", metavar="EDGE",
                     help=f"patch edges for MedT3D memory growth (default {' '.join(map(str, d.memory_sizes))})")
    net.add_argument("--no-sliding-window", action="store_true", help="skip sliding-window inference")
    net.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    inf = p.add_argument_group("--infer options")
    inf.add_argument("--infer-volumes", nargs="+", choices=list(INFER_VOLUMES), metavar="NAME",
                     help=f"volumes to time (default: all of {', '.join(INFER_VOLUMES)})")
    inf.add_argument("--infer-dir", default=DEFAULT_DIR,
                     help=f"folder for phantom scans (made once, reused), checkpoint, predictions and logs "
                          f"(default: {DEFAULT_DIR})")
    inf.add_argument("--infer-device", default="cpu", help="where the windows run (default: cpu)")
    inf.add_argument("--infer-batch", type=int, default=1, metavar="N",
                     help="also run medt3d infer on N copies of each scan in one process, against N single runs")
    inf.add_argument("--infer-engines", action="store_true",
                     help="instead of UNet: MedT3D on torch fp32, torch bf16, ONNX Runtime fp32 and int8 (and fp16 on "
                          "a GPU) on the first --infer-volumes (default the largest): case and window time, peak "
                          "memory, labels equal to torch fp32's")
    inf.add_argument("--infer-model", metavar="MODEL",
                     help="with --infer-engines: a trained checkpoint or run folder (default: random weights)")
    inf.add_argument("--infer-calibration", metavar="DIR",
                     help="with --infer-engines: data whose windows calibrate int8 (default: the benchmark scan)")
    qual = p.add_argument_group("--quality options")
    qual.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                      help=f"training seconds per network and run (default {DEFAULT_BUDGET_S:.0f}), counted by "
                           "train.clock: add --set train.clock=cpu to give each network the same CPU time on a "
                           "busy or virtual machine")
    qual.add_argument("--quality-networks", nargs="+", default=list(DEFAULT_NETWORKS), choices=NETWORKS,
                      metavar="NAME", help=f"networks to compare (default: {' '.join(DEFAULT_NETWORKS)})")
    qual.add_argument("--quality-data",
                      help="folder of the real CT patients (default: ../shared/data); any other folder of labelled "
                           "patients (DATA/<patient>/<channel>/image.nii.gz + a label file, or any layout medt3d "
                           "train reads) runs leave one patient out on it")
    qual.add_argument("--quality-channels", nargs="+", metavar="SETTING",
                      help="with a folder of labelled patients: the channels each model sees, joined by '+', e.g. "
                           "CT PET CT+PET MR_T1 (the first is the reference grid; default: each channel alone)")
    qual.add_argument("--quality-dir", default="bench_quality",
                      help="folder for labels, runs, evaluations and overlays (default: bench_quality)")
    qual.add_argument("--quality-train", nargs="+", metavar="PATIENT",
                      help="run only the folds trained on these patients (ct_spleen, ct_abdomen_ts; default: both), "
                           "e.g. to repeat one fold with another --set train.seed; 'none' runs no fold, so that "
                           "--multi-organ runs alone")
    qual.add_argument("--quality-epochs", nargs="+", metavar="NETWORK=EPOCHS",
                      help="train each network for a fixed number of epochs instead of --budget, e.g. medt3d=44 "
                           "unet=28 (about the epochs each runs in 600 s on a quiet 2-core machine): recipe experiments "
                           "whose result does not depend on how busy the machine is")
    qual.add_argument("--quality-seeds", nargs="+", type=int, metavar="SEED",
                      help="repeat every fold with each of these train.seed values and report each seed and the "
                           "mean (one seed can move a cross-patient Dice by 0.2; default: once, the config's seed)")
    qual.add_argument("--multi-organ", action="store_true",
                      help="also train on the four organs of ct_abdomen_ts: self-fit Dice per organ and the spleen "
                           "on ct_spleen")
    p.add_argument("--output", help="also write the JSON to this file (atomically)")
    p.add_argument("--markdown", help="also write the tables of --networks or --quality as Markdown to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the selected modes and print one JSON object keyed by mode."""
    selected = [mode for mode in _MODES if getattr(args, mode, False)] or ["networks"]
    cfg = None if selected == ["quality"] else load_config(args.config or _DEFAULT_CONFIG, args.overrides)

    def log(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    report = {mode: _MODES[mode](cfg, args, log) for mode in selected}
    text = json.dumps(report, indent=2)
    if args.output:
        from medt3d.io_utils import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    if args.markdown:
        from medt3d.io_utils import atomic_write_text

        parts = []
        if "networks" in report:
            from medt3d.bench.networks import networks_markdown

            parts.append(networks_markdown(report["networks"]))
        if "quality" in report:
            from medt3d.bench.patients import patients_markdown
            from medt3d.bench.quality import quality_markdown

            quality = report["quality"]
            parts.append(patients_markdown(quality) if "settings" in quality else quality_markdown(quality))
        atomic_write_text(args.markdown, "\n".join(parts))
    print(text)
    return 0
