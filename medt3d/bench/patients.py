"""``medt3d bench --quality`` on any labelled data folder: leave one patient out, per channel setting.

The two abdomens of ``../shared/data`` have their own benchmark (:mod:`medt3d.bench.quality`); this one
takes a folder of N labelled patients and runs N folds: train on N-1 patients, score the one left out
(Dice, HD95, lesion-wise F1 and volumes of :func:`medt3d.evaluation.evaluate.evaluate`, with an overlay).
Every network gets the same config, seed and budget, without validation during training (the model at
the end of the budget is scored), as in the spleen benchmark.

Two kinds of folder are read:

- the **patient-folder layout**: ``DATA/<patient>/<channel>/`` holding ``image.<ext>`` and one label
  file on that image's grid (``gtv.nii.gz``, ``label.nii.gz``...), e.g. the sarcoma set
  ``ct_pet_mr_sts/STS_001/{CT,PET,MR_T1}/``;
- any layout ``medt3d train`` reads (:func:`medt3d.data.datalist.build_datalist`): each labelled case is a
  patient, its channels named by the dataset (``channel_names``) or ``ch0``, ``ch1``...

A **setting** names the channels a model sees, joined by ``+`` (``CT``, ``PET``, ``CT+PET``); the first
is the reference channel: the others are resampled onto its grid (:mod:`medt3d.data.readers.channels`),
and the label drawn on its grid is the reference. Each setting sets ``data.in_channels``,
``data.channels`` and ``data.modality``; everything else comes from the config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.errors import InputError
from medt3d.io_utils import atomic_write_text

__all__ = ["PatientCase", "bench_patients", "find_patients", "holds_abdomens", "parse_settings", "patients_markdown"]

Log = Callable[[str], None]
#: the image file's name (without suffix) in each channel folder of the patient-folder layout
IMAGE_STEM = "image"
#: the figures of one scored model, with the decimals they are reported with
_FIGURES = {"dice": 4, "hd95_mm": 1, "lesion_f1": 3, "lesion_tp": 0, "lesion_fp": 0, "lesion_fn": 0,
            "volume_pred_ml": 1, "volume_ref_ml": 1}


@dataclass(frozen=True)
class PatientCase:
    """One patient: an image file per channel name and a label per channel grid (``"*"``: one for all)."""

    name: str
    images: dict[str, str]
    labels: dict[str, str]

    def label_for(self, channel: str) -> str:
        """The label on ``channel``'s grid, else the patient's one label."""
        return self.labels.get(channel) or self.labels["*"]


def _scan_files(folder: Path) -> list[Path]:
    from medt3d.data.readers import FORMATS

    suffixes = tuple(s for f in FORMATS.values() for s in f.suffixes)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))


def _channel_folder(folder: Path) -> tuple[str, str] | None:
    """(image, label) of a channel folder of the patient-folder layout, or ``None`` when it is not one."""
    from medt3d.data.readers import strip_suffix

    files = _scan_files(folder)
    images = [f for f in files if strip_suffix(f.name) == IMAGE_STEM]
    others = [f for f in files if strip_suffix(f.name) != IMAGE_STEM]
    if len(images) != 1 or len(others) != 1:
        return None
    return str(images[0].resolve()), str(others[0].resolve())


def _patient_folders(root: Path) -> list[PatientCase]:
    patients = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        channels = {sub.name: _channel_folder(sub) for sub in sorted(folder.iterdir()) if sub.is_dir()}
        found = {name: pair for name, pair in channels.items() if pair is not None}
        if not found:
            return []
        patients.append(PatientCase(folder.name, {n: p[0] for n, p in found.items()},
                                    {n: p[1] for n, p in found.items()}))
    return patients


def holds_abdomens(data: str | Path) -> bool:
    """Whether ``data`` is the shared data folder of the spleen benchmark (both abdomens' files in it)."""
    from medt3d.bench.quality import PATIENTS

    return all((Path(data) / f).is_file() for p in PATIENTS.values() for f in (p.image, p.label))


def find_patients(data: str | Path) -> tuple[list[PatientCase], list[str]]:
    """The labelled patients of a data folder (module docstring) and the channel names they all have.

    Raises:
        InputError: fewer than two labelled patients, or no channel common to all of them.
    """
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"--quality-data {root}: no such folder; pass a folder of labelled patients")
    patients = _patient_folders(root) if root.is_dir() else []
    if not patients:
        from medt3d.data.datalist import build_datalist

        datalist = build_datalist(root)
        cases = [c for c in datalist.cases if c.get("label")]
        first = cases[0]["image"] if cases else ""
        n = 1 if isinstance(first, str) else len(first)
        names = list(datalist.channels or []) if datalist.channels and len(datalist.channels) == n else \
            ([datalist.modality or "CT"] if n == 1 else [f"ch{i}" for i in range(n)])
        patients = [PatientCase(c["name"], dict(zip(names, [c["image"]] if n == 1 else c["image"])),
                                {"*": c["label"]}) for c in cases]
    if len(patients) < 2:
        raise InputError(f"--quality-data {root}: {len(patients)} labelled patient(s); leaving one patient out "
                         "needs at least 2; pass a folder of labelled patients")
    common = [c for c in patients[0].images if all(c in p.images for p in patients)]
    if not common:
        raise InputError(f"--quality-data {root}: no channel is common to every patient; give every patient "
                         "the same channel folders")
    return patients, common


def parse_settings(settings: Sequence[str] | None, channels: Sequence[str]) -> list[list[str]]:
    """``["CT", "CT+PET"]`` as ``[["CT"], ["CT", "PET"]]``; ``None``: each channel alone.

    Raises:
        InputError: a channel that not every patient has, or one named twice in a setting.
    """
    if not settings:
        return [[c] for c in channels]
    parsed = []
    for setting in settings:
        names = [n for n in setting.split("+") if n]
        unknown = [n for n in names if n not in channels]
        if not names or unknown or len(set(names)) != len(names):
            raise InputError(f"--quality-channels {setting!r}: name channels of every patient joined by '+', "
                             f"each once; choose from {', '.join(channels)}")
        parsed.append(names)
    return parsed


def _modality(channel: str) -> str:
    return "CT" if channel.upper() == "CT" else "MR"


def _setting_overrides(channels: Sequence[str]) -> list[str]:
    return [f"data.in_channels={len(channels)}", f"data.channels=[{', '.join(channels)}]",
            f"data.modality={_modality(channels[0])}", "data.reference_channel=0"]


def _case(patient: PatientCase, channels: Sequence[str]) -> dict[str, Any]:
    images = [patient.images[c] for c in channels]
    return {"name": patient.name, "image": images[0] if len(images) == 1 else images,
            "label": patient.label_for(channels[0])}


def _datalist(path: Path, cases: list[dict[str, Any]], split: str = "train") -> Path:
    atomic_write_text(path, json.dumps({"train": [], split: cases}, indent=2) + "\n")
    return path


def _figures(summary: dict[str, Any]) -> dict[str, float]:
    """The foreground mean of each reported figure (one case, so the case's own)."""
    fg = summary["foreground_mean"]
    out = {key: round(float(fg[key if key != "volume_ref_ml" else "volume_gt_ml"]), digits)
           for key, digits in _FIGURES.items()}
    return out


def bench_patients(data: str | Path, output: str | Path, networks: Sequence[str], budget_s: float, config: str,
                   overrides: Sequence[str] = (), settings: Sequence[str] | None = None, log: Log = print,
                   epochs: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Leave one patient out for every setting and network; return the JSON-ready report.

    Args:
        data: the labelled data folder (module docstring).
        output: folder for the datalists, runs, evaluations and overlays.
        networks: ``network.name`` values compared, each with the same budget.
        budget_s: training seconds per network and fold, counted by ``train.clock``.
        config: config preset or YAML shared by every run.
        overrides: ``--set`` overrides shared by every run.
        settings: channel settings (``CT``, ``CT+PET``); ``None``: each channel alone.
        log: progress messages.
        epochs: a fixed number of epochs per network instead of the budget.

    Returns:
        Per setting, fold and network the test patient's Dice, HD95, lesion F1 (TP/FP/FN), volumes, the
        epochs and seconds trained and the overlay; and per setting and network the means over folds.
    """
    from medt3d.bench.compare import machine, train_on_budget
    from medt3d.bench.quality import _limit
    from medt3d.config import load_config
    from medt3d.evaluation.evaluate import evaluate

    patients, channels = find_patients(data)
    chosen = parse_settings(settings, channels)
    clock = load_config(config, list(overrides)).train.clock  # fails early on a bad config or override
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"data": str(data), "config": config, "overrides": list(overrides),
                              "budget_s": None if epochs else budget_s, "clock": None if epochs else clock,
                              "epochs_fixed": dict(epochs) if epochs else None, "networks": list(networks),
                              "patients": [p.name for p in patients], "machine": machine(), "settings": []}
    started = time.time()
    for setting in chosen:
        name = "+".join(setting)
        folds = []
        for test in patients:
            work = out / name.replace("+", "_") / test.name
            work.mkdir(parents=True, exist_ok=True)
            train_list = _datalist(work / "train.json", [_case(p, setting) for p in patients if p is not test])
            test_list = _datalist(work / "test.json", [_case(test, setting)], "test")
            fold: dict[str, Any] = {"test": test.name, "results": {}}
            for network in networks:
                limit, wording = _limit(network, budget_s, epochs)
                log(f"quality: {name}: {test.name} left out: training {network} for {wording}")
                run = train_on_budget(config, [*overrides, *_setting_overrides(setting), "train.val_interval=0",
                                               *limit], train_list, work / network / "run")
                summary = evaluate(run["checkpoint"], test_list, work / network / "test", split="test")
                fold["results"][network] = {**_figures(summary), **run,
                                            "overlay": str(work / network / "test" / "overlays" / f"{test.name}.png")}
                r = fold["results"][network]
                log(f"quality: {name}: {network} on {test.name}: Dice {r['dice']:.3f}, HD95 {r['hd95_mm']:.1f} mm, "
                    f"lesion F1 {r['lesion_f1']:.2f}, {run['epochs_run']} epochs")
            folds.append(fold)
        means = {network: {key: round(float(np.mean([f["results"][network][key] for f in folds])), 4)
                           for key in ("dice", "hd95_mm", "lesion_f1")} for network in networks}
        report["settings"].append({"channels": setting, "name": name, "folds": folds, "mean": means})
    report["total_seconds"] = round(time.time() - started, 1)
    return report


def patients_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per setting, fold and network, then the means over folds."""
    from medt3d.bench.quality import _limit_text

    cpu = report.get("clock") == "cpu"
    lines = [f"Data `{report['data']}` ({len(report['patients'])} patients, leave one out), config "
             f"`{report['config']}`{' with ' + ', '.join(report['overrides']) if report['overrides'] else ''}, "
             f"{_limit_text(report)} of training per network and fold, {report['machine']['cpu_threads']} threads.",
             "", "| channels | test patient | network | Dice | HD95 (mm) | lesion F1 (TP/FP/FN) | volume pred / ref (mL) "
                 "| epochs | wall s |" + (" CPU s |" if cpu else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if cpu else "")]
    for setting in report["settings"]:
        for fold in setting["folds"]:
            for network, r in fold["results"].items():
                lines.append(f"| {setting['name']} | {fold['test']} | {network} | {r['dice']:.3f} | {r['hd95_mm']:.1f} "
                             f"| {r['lesion_f1']:.2f} ({r['lesion_tp']:g}/{r['lesion_fp']:g}/{r['lesion_fn']:g}) | "
                             f"{r['volume_pred_ml']:.1f} / {r['volume_ref_ml']:.1f} | {r['epochs_run']} | "
                             f"{r['train_seconds']:.0f} |" + (f" {r['clock_seconds']:.0f} |" if cpu else ""))
    lines += ["", "Means over the folds:", "", "| channels | network | Dice | HD95 (mm) | lesion F1 |", "|---|---|---|---|---|"]
    for setting in report["settings"]:
        for network, m in setting["mean"].items():
            lines.append(f"| {setting['name']} | {network} | {m['dice']:.3f} | {m['hd95_mm']:.1f} | {m['lesion_f1']:.2f} |")
    return "\n".join(lines) + "\n"
