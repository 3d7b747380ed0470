#!/usr/bin/env python
"""Teacher against distilled students on a cross-patient fold: Dice, window time, size (issue 33).

Per seed: the teacher (MedT3D of ``--config``) is trained on the training data for ``--budget`` seconds
of ``train.clock`` (or taken from ``--teacher SEED=RUN``), then each student (``--student
NAME=KEY=VALUE,KEY=VALUE``: ``network.*`` overrides of the teacher's own config) is distilled from it with
``medt3d.training.distill.distill`` for the same budget; every model is scored on the test data's
``--structure`` with ``medt3d.evaluation.evaluate``. The data default to the spleen of the two real CT
patients (``--train ct_abdomen_ts --test ct_spleen``); ``--train-data``/``--test-data`` take any datalists
(e.g. a fold of ``medt3d bench --quality --quality-data``). ``--timing`` then times one inference window
batch (``infer.sw_batch_size`` x ``infer.roi_size``) of the teacher, each student and MONAI UNet in this
one process. JSON on stdout, progress on stderr.

Examples:
    python scripts/distill_curve.py --output out --seeds 0 1 2 --budget 600 --set train.clock=cpu \
        --student narrow=network.channels=[16,32],network.blocks=[1,1],network.heads=2
    python scripts/distill_curve.py --output out --timing-only --student narrow=...
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medt3d.bench.compare import budget_overrides, machine, train_on_budget
from medt3d.bench.quality import find_shared_data, organ_datalist
from medt3d.config import Config, apply_overrides, config_from_dict, load_config
from medt3d.evaluation.evaluate import evaluate
from medt3d.models.checkpoint import load_checkpoint
from medt3d.models.loading import model_file
from medt3d.networks import build_network
from medt3d.training.distill import distill
from medt3d.training.distill_defaults import DEFAULT_ALPHA, DEFAULT_TEMPERATURE

LABELS = "data.labels=[background,spleen]"


def _student(text: str) -> tuple[str, list[str]]:
    name, _, settings = text.partition("=")
    overrides = [s for s in _split_top_level(settings) if s]
    if not name or not overrides:
        raise argparse.ArgumentTypeError(f"--student {text!r}: give NAME=KEY=VALUE[,KEY=VALUE...]")
    return name, overrides


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets (``network.channels=[16,32],network.heads=2``)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _model_mb(model: str | Path) -> float:
    """Size of the checkpoint file a run folder (or a checkpoint path) is scored with, in MiB."""
    return round(model_file(model).stat().st_size / 2**20, 2)


def _student_config(teacher: str | Path, overrides: list[str]) -> Config:
    """The teacher's own config (its data, preprocessing and patches) with the student's ``overrides`` on top."""
    payload = load_checkpoint(model_file(teacher))
    return config_from_dict(apply_overrides(payload["config"], overrides), source=f"{teacher} + student")


def _dice(summary: dict[str, Any], structure: str) -> float:
    return round(summary["per_class"][structure]["dice"]["mean"], 4)


def window_seconds(overrides: list[str], config: str, repeats: int) -> dict[str, Any]:
    """Median eval-mode forward time of one inference window batch of the configured network."""
    cfg = load_config(config, overrides)
    net = build_network(cfg).eval()
    batch = torch.randn(cfg.infer.sw_batch_size, cfg.data.in_channels, *cfg.infer.roi_size)
    times = []
    with torch.no_grad():
        net(batch)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            net(batch)
            times.append(time.perf_counter() - start)
    return {"window_s": round(statistics.median(times), 4), "params": sum(p.numel() for p in net.parameters()),
            "window": [cfg.infer.sw_batch_size, *cfg.infer.roi_size]}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train and score teachers and students, time their windows, print JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="folder for labels, runs and evaluations")
    p.add_argument("--shared-data", help="folder of the real CT patients (default ../shared/data)")
    p.add_argument("--config", default="ct_abdomen")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--train", default="ct_abdomen_ts", help="training patient")
    p.add_argument("--test", default="ct_spleen", help="test patient")
    p.add_argument("--train-data", help="training datalist instead of --train's spleen")
    p.add_argument("--test-data", help="test datalist instead of --test's spleen")
    p.add_argument("--structure", default="spleen", help="the class whose Dice is reported")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=float, default=600.0, help="seconds of train.clock per training")
    p.add_argument("--teacher", action="append", default=[], metavar="SEED=RUN", help="a trained teacher run")
    p.add_argument("--student", type=_student, action="append", default=[], metavar="NAME=OVERRIDES")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    p.add_argument("--timing", action="store_true", help="also time the windows (run on a quiet machine)")
    p.add_argument("--timing-only", action="store_true", help="only time the windows")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.output)
    teachers = {int(k): v for k, _, v in (t.partition("=") for t in args.teacher)}
    report: dict[str, Any] = {"config": args.config, "overrides": args.overrides, "budget_s": args.budget,
                              "train_data": args.train_data or args.train, "test_data": args.test_data or args.test,
                              "structure": args.structure,
                              "temperature": args.temperature, "alpha": args.alpha, "machine": machine(),
                              "students": {name: ov for name, ov in args.student}, "seeds": []}
    if not args.timing_only:
        if args.train_data and args.test_data:
            lists = {args.train: Path(args.train_data), args.test: Path(args.test_data)}
        else:
            labels = out / "labels"
            labels.mkdir(parents=True, exist_ok=True)
            root = find_shared_data(args.shared_data)
            lists = {pt: organ_datalist(root, pt, ("spleen",), labels) for pt in (args.train, args.test)}
        for seed in args.seeds:
            spleen = [] if args.train_data else [LABELS]
            common = [*args.overrides, *spleen, "train.val_interval=0", f"train.seed={seed}"]
            work = out / f"seed{seed}"
            teacher = teachers.get(seed)
            if teacher is None:
                run = train_on_budget(args.config, [*common, *budget_overrides("medt3d", args.budget)],
                                      lists[args.train], work / "teacher")
                teacher = run["checkpoint"]
            row: dict[str, Any] = {"seed": seed, "teacher": str(teacher),
                                   "teacher_dice": _dice(evaluate(teacher, lists[args.test], work / "teacher_test",
                                                                  split="all"), args.structure),
                                   "teacher_checkpoint_mb": _model_mb(teacher)}
            for name, net_overrides in args.student:
                cfg = _student_config(teacher, [*common, *budget_overrides("medt3d", args.budget), *net_overrides])
                start = time.time()
                result = distill(cfg, teacher, lists[args.train], work / name, temperature=args.temperature,
                                 alpha=args.alpha, overwrite=True)
                row[name] = {"dice": _dice(evaluate(result.model_checkpoint, lists[args.test], work / f"{name}_test",
                                                    split="all"), args.structure),
                             "epochs": result.epochs_run, "wall_s": round(time.time() - start, 1),
                             "checkpoint_mb": _model_mb(result.model_checkpoint)}
                logging.info("seed %d: teacher %.3f, %s %.3f", seed, row["teacher_dice"], name, row[name]["dice"])
            report["seeds"].append(row)
            print(json.dumps(report), file=sys.stderr)  # the figures so far, in case a later seed fails
    if args.timing or args.timing_only:
        torch.set_num_threads(torch.get_num_threads())
        nets = {"teacher": [], **{name: ov for name, ov in args.student}, "unet": ["network.name=unet"]}
        report["timing"] = {name: window_seconds([*args.overrides, LABELS, *ov], args.config, args.repeats)
                            for name, ov in nets.items()}
        base = report["timing"]["teacher"]["window_s"]
        for row in report["timing"].values():
            row["speedup"] = round(base / row["window_s"], 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
