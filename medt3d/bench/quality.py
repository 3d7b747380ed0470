"""``medt3d bench --quality``: does the network learn real anatomy? Cross-patient spleen on real CT.

Leave one patient out on the two real abdominal CT patients of ``../shared/data``: train on one,
score the spleen on the other, in both directions. Every network gets the same config, seed and
wall-clock budget (:func:`medt3d.bench.compare.train_on_budget`), without validation during
training: the model at the end of the budget is scored, so the test patient is never seen before. Each model is scored in the test scan's
own geometry by :func:`medt3d.evaluation.evaluate.evaluate` (Dice, HD95, volumes, overlays), and on
its own training patient too (the self-fit, which tells under-fitting from failing to generalise).

``multi_organ=True`` adds one more run per network: all four organs of ``ct_abdomen_ts`` (spleen,
kidneys, liver), scored per organ on that patient (self-fit) and for the spleen on ``ct_spleen``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medt3d.bench.settings import DEFAULT_BUDGET_S, DEFAULT_CONFIG, DEFAULT_NETWORKS
from medt3d.config import load_config
from medt3d.data.nifti import write_nifti
from medt3d.errors import InputError
from medt3d.io_utils import atomic_write_text

__all__ = [
    "DEFAULT_BUDGET_S",
    "DEFAULT_CONFIG",
    "DEFAULT_NETWORKS",
    "FOLDS",
    "MULTI_ORGAN",
    "PATIENTS",
    "Patient",
    "bench_quality",
    "find_shared_data",
    "organ_datalist",
    "quality_markdown",
]

logger = logging.getLogger("medt3d.bench.quality")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Patient:
    """One real CT patient of ``../shared/data``: image, label and the label value of each organ."""

    image: str
    label: str
    organs: dict[str, int]


#: The real CT patients (paths relative to the shared data folder; see its README).
PATIENTS: dict[str, Patient] = {
    "ct_spleen": Patient("ct_spleen/spleen_2_ct.nii.gz", "ct_spleen/spleen_2_label.nii.gz", {"spleen": 1}),
    "ct_abdomen_ts": Patient(
        "ct_abdomen_ts/abdomen_ts_ct.nii.gz", "ct_abdomen_ts/abdomen_ts_label.nii.gz",
        {"spleen": 1, "right_kidney": 2, "left_kidney": 3, "liver": 4},
    ),
}
#: (training patient, test patient) of each fold.
FOLDS: tuple[tuple[str, str], ...] = (("ct_spleen", "ct_abdomen_ts"), ("ct_abdomen_ts", "ct_spleen"))
#: The multi-organ run: its training patient and organs, and the organ scored on the other patient.
MULTI_ORGAN: dict[str, Any] = {"train": "ct_abdomen_ts", "organs": ("spleen", "right_kidney", "left_kidney", "liver"),
                               "test": "ct_spleen", "test_organ": "spleen"}
#: The ``--quality-train`` value that runs no fold (with ``--multi-organ``: the four-organ run alone).
NO_FOLDS = "none"
#: Where the shared data sit, relative to the working folder (a clone's sibling ``shared/``).
DEFAULT_SHARED_DATA = Path("../shared/data")


def select_folds(train_patients: Sequence[str] | None = None) -> tuple[tuple[str, str], ...]:
    """The folds of :data:`FOLDS` trained on ``train_patients`` (all of them for ``None``, none for ``["none"]``).

    Raises:
        ValueError: a patient that trains no fold, naming the ones that do, or ``none`` beside a patient.
    """
    if not train_patients:
        return FOLDS
    if NO_FOLDS in train_patients:
        if len(train_patients) > 1:
            raise InputError(f"--quality-train: {NO_FOLDS!r} runs no fold and cannot stand beside "
                             f"{', '.join(p for p in train_patients if p != NO_FOLDS)}; pass it alone")
        return ()
    known = [train for train, _ in FOLDS]
    unknown = [p for p in train_patients if p not in known]
    if unknown:
        raise InputError(f"--quality-train: {', '.join(unknown)} trains no fold; choose from {', '.join(known)}")
    return tuple(fold for fold in FOLDS if fold[0] in train_patients)


def find_shared_data(path: str | Path | None = None) -> Path:
    """The folder holding the real CT patients.

    Raises:
        FileNotFoundError: the folder, or a patient's image or label, is missing.
    """
    root = Path(path) if path is not None else DEFAULT_SHARED_DATA
    missing = [str(root / f) for p in PATIENTS.values() for f in (p.image, p.label) if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"the real CT patients are not in {root} (missing {', '.join(missing)}); "
                                "pass the shared data folder with --quality-data")
    return root


def _organ_label(root: Path, patient: str, organs: Sequence[str], out: Path) -> Path:
    """Write ``patient``'s label with ``organs`` renumbered 1..n in that order and everything else 0."""
    import nibabel as nib

    spec = PATIENTS[patient]
    unknown = [o for o in organs if o not in spec.organs]
    if unknown:
        raise InputError(f"{patient} has no label for {unknown}; choose from {sorted(spec.organs)}")
    source = nib.load(str(root / spec.label))
    values = np.asarray(source.dataobj)
    mapped = np.zeros(values.shape, dtype=np.uint8)
    for index, organ in enumerate(organs, start=1):
        mapped[values == spec.organs[organ]] = index
    return write_nifti(mapped, source.affine, out / f"{patient}_{'_'.join(organs)}.nii.gz")


def organ_datalist(root: Path, patient: str, organs: Sequence[str], out: Path) -> Path:
    """A JSON datalist of one patient whose label holds ``organs`` (1..n); every other voxel is background."""
    label = _organ_label(root, patient, organs, out)
    case = {"name": patient, "image": str((root / PATIENTS[patient].image).resolve()), "label": str(label.resolve())}
    path = out / f"{patient}_{'_'.join(organs)}.json"
    atomic_write_text(path, json.dumps({"train": [case], "labels": ["background", *organs], "modality": "CT"},
                                       indent=2) + "\n")
    return path


def _scores(summary: dict[str, Any], organ: str) -> dict[str, float]:
    row = summary["per_class"][organ]
    return {"dice": round(row["dice"]["mean"], 4), "hd95_mm": round(row["hd95_mm"]["mean"], 1),
            "volume_pred_ml": round(row["volume_pred_ml"]["mean"], 1),
            "volume_ref_ml": round(row["volume_gt_ml"]["mean"], 1)}


def _limit(name: str, budget_s: float, epochs: Mapping[str, int] | None) -> tuple[list[str], str]:
    """The overrides that end a network's training (fixed epochs if given, else the budget) and their wording."""
    from medt3d.bench.compare import budget_overrides, epoch_overrides

    if epochs:
        return epoch_overrides(name, epochs[name]), f"{epochs[name]} epochs"
    return budget_overrides(name, budget_s), f"{budget_s:.0f} s"


def _run(config: str, overrides: list[str], name: str, limit: list[str], organs: Sequence[str], train_list: Path,
         run_dir: Path) -> dict[str, Any]:
    from medt3d.bench.compare import train_on_budget

    labels = ", ".join(["background", *organs])
    # no validation during training: the model at the end of its budget is scored, and the test patient
    # is never seen before that
    return train_on_budget(config, [*overrides, f"data.labels=[{labels}]", "train.val_interval=0", *limit],
                           train_list, run_dir)


def _score(checkpoint: str, datalist: Path, out: Path) -> dict[str, Any]:
    from medt3d.evaluation.evaluate import evaluate

    return evaluate(checkpoint, datalist, out, split="all", overlays=True)


#: the organ every fold trains and scores
_SPLEEN = ("spleen",)


def bench_quality(output: str | Path, shared_data: str | Path | None = None,
                  networks: Sequence[str] = DEFAULT_NETWORKS, budget_s: float = DEFAULT_BUDGET_S,
                  config: str = DEFAULT_CONFIG, overrides: Sequence[str] = (), multi_organ: bool = False,
                  folds: Sequence[tuple[str, str]] = FOLDS, log: Log = print,
                  epochs: Mapping[str, int] | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Train every network on each fold's training patient and score the spleen on its test patient.

    Args:
        output: folder for labels, runs, evaluations and overlays.
        shared_data: the folder holding the real CT patients (default ``../shared/data``).
        networks: ``network.name`` values to compare, each with the same budget.
        budget_s: training seconds per network and run, counted by ``train.clock`` (wall by default;
            ``cpu`` gives both networks the same CPU time on a busy machine).
        config: config preset or YAML shared by all networks.
        overrides: ``--set`` style overrides shared by all networks.
        multi_organ: also train on all organs of ``ct_abdomen_ts`` (see the module docstring).
        folds: (training patient, test patient) pairs.
        log: progress messages.
        epochs: a fixed number of epochs for each network instead of ``budget_s`` (recipe experiments
            on a busy machine: the result no longer depends on the load); one entry per network.
        seeds: repeat every fold with each of these ``train.seed`` values (one seed moves a
            cross-patient Dice by up to 0.2); ``None`` runs once with the config's seed. The
            multi-organ run uses the first seed.

    Raises:
        ValueError: ``epochs`` lacks a network or names one not compared; a seed given twice.

    Returns:
        The JSON-ready report: per fold and network the test patient's spleen Dice, HD95 and volumes,
        the self-fit Dice, the epochs, iterations and seconds trained; and the mean Dice per network.
        With ``seeds``, each fold's figures are the means over the seeds, and ``per_seed`` holds each
        seed's own.
    """
    from medt3d.bench.compare import machine

    _check_quality_args(networks, epochs, seeds, folds, multi_organ)
    root = find_shared_data(shared_data)
    out = Path(output)
    labels = out / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    lists = {p: organ_datalist(root, p, _SPLEEN, labels) for p in {p for fold in folds for p in fold}}
    clock = load_config(config, list(overrides)).train.clock  # also fails early on a bad config or override
    report: dict[str, Any] = {"config": config, "overrides": list(overrides), "budget_s": None if epochs else budget_s,
                              "clock": None if epochs else clock,
                              "epochs_fixed": dict(epochs) if epochs else None,
                              "seeds": list(seeds) if seeds else None,
                              "networks": list(networks), "machine": machine(), "folds": []}
    started = time.time()
    for train_patient, test_patient in folds:
        report["folds"].append(_quality_fold(train_patient, test_patient, lists, out, networks, budget_s, config,
                                             overrides, log, epochs, seeds))
    if folds:
        report["mean_dice"] = {name: round(float(np.mean([f["results"][name]["dice"] for f in report["folds"]])), 4)
                               for name in networks}
    if multi_organ:
        first_seed = [f"train.seed={seeds[0]}"] if seeds else []
        report["multi_organ"] = _multi_organ(root, out, labels, lists, networks, budget_s, config,
                                             [*overrides, *first_seed], log, epochs)
    report["total_seconds"] = round(time.time() - started, 1)
    return report


def _check_quality_args(networks: Sequence[str], epochs: Mapping[str, int] | None, seeds: Sequence[int] | None,
                        folds: Sequence[tuple[str, str]], multi_organ: bool) -> None:
    """Refuse epochs that do not name each network, repeated seeds, and a run with nothing to train."""
    if epochs is not None and set(epochs) != set(networks):
        raise InputError(f"--quality-epochs needs one entry per network compared ({', '.join(networks)}), "
                         f"got {', '.join(f'{k}={v}' for k, v in epochs.items()) or 'none'}; pass one for each")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise InputError(f"--quality-seeds needs distinct seeds, got {list(seeds)}; pass each seed once")
    if not folds and not multi_organ:
        raise InputError(f"--quality-train {NO_FOLDS}: no fold and no --multi-organ run, so nothing to benchmark; "
                         "add --multi-organ")


def _quality_fold(train_patient: str, test_patient: str, lists: dict[str, Path], out: Path,
                  networks: Sequence[str], budget_s: float, config: str, overrides: Sequence[str], log: Log,
                  epochs: Mapping[str, int] | None, seeds: Sequence[int] | None) -> dict[str, Any]:
    """One fold: every network (and seed) trained on the training patient, scored on both patients' spleens."""
    fold_name = f"{train_patient}_to_{test_patient}"
    fold: dict[str, Any] = {"train": train_patient, "test": test_patient, "results": {}}
    for name in networks:
        limit, wording = _limit(name, budget_s, epochs)
        rows = []
        for seed in seeds or (None,):
            seeded = [] if seed is None else [f"train.seed={seed}"]
            work = out / fold_name / name / ("" if seed is None else f"seed{seed}")
            log(f"quality: {fold_name}: training {name} for {wording}" + ("" if seed is None else f", seed {seed}"))
            run = _run(config, [*overrides, *seeded], name, limit, _SPLEEN, lists[train_patient], work / "run")
            cross = _scores(_score(run["checkpoint"], lists[test_patient], work / "test"), "spleen")
            self_fit = _scores(_score(run["checkpoint"], lists[train_patient], work / "self"), "spleen")
            rows.append({**cross, "self_fit_dice": self_fit["dice"], **run, "seed": seed,
                         "overlay": str(work / "test" / "overlays" / f"{test_patient}.png")})
            log(f"quality: {fold_name}: {name} spleen Dice {cross['dice']:.3f} on {test_patient} "
                f"(self-fit {self_fit['dice']:.3f}), {run['epochs_run']} epochs")
        fold["results"][name] = rows[0] if seeds is None else _seed_means(rows)
    return fold


#: Per-seed figures averaged over the seeds of a fold, with the decimals they are reported with.
_AVERAGED = {"dice": 4, "hd95_mm": 1, "volume_pred_ml": 1, "volume_ref_ml": 1, "self_fit_dice": 4,
             "epochs_run": 1, "iterations": 1, "train_seconds": 1, "clock_seconds": 1}


def _seed_means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One network's fold over several seeds: the mean of each figure, and every seed's row."""
    means = {key: round(float(np.mean([row[key] for row in rows])), digits) for key, digits in _AVERAGED.items()}
    return {**means, "dice_min": min(row["dice"] for row in rows), "dice_max": max(row["dice"] for row in rows),
            "per_seed": rows}


def _multi_organ(root: Path, out: Path, labels: Path, lists: dict[str, Path], networks: Sequence[str],
                 budget_s: float, config: str, overrides: Sequence[str], log: Log,
                 epochs: Mapping[str, int] | None) -> dict[str, Any]:
    organs = MULTI_ORGAN["organs"]
    train_list = organ_datalist(root, MULTI_ORGAN["train"], organs, labels)
    test_list = lists.get(MULTI_ORGAN["test"]) or organ_datalist(root, MULTI_ORGAN["test"], ("spleen",), labels)
    results: dict[str, Any] = {}
    for name in networks:
        limit, wording = _limit(name, budget_s, epochs)
        log(f"quality: multi-organ on {MULTI_ORGAN['train']}: training {name} for {wording}")
        work = out / "multi_organ" / name
        run = _run(config, list(overrides), name, limit, organs, train_list, work / "run")
        self_fit = _score(run["checkpoint"], train_list, work / "self")
        cross = _score(run["checkpoint"], test_list, work / "test")
        results[name] = {"self_fit": {organ: _scores(self_fit, organ) for organ in organs},
                         "test_spleen": _scores(cross, MULTI_ORGAN["test_organ"]), **run}
    return {"train": MULTI_ORGAN["train"], "organs": list(organs), "test": MULTI_ORGAN["test"], "results": results}


def _limit_text(report: dict[str, Any]) -> str:
    fixed = report.get("epochs_fixed")
    if fixed:
        return "fixed epochs (" + ", ".join(f"{name} {n}" for name, n in fixed.items()) + ")"
    per_thread = " of CPU time per thread" if report.get("clock") == "cpu" else ""
    return f"{report['budget_s']:.0f} s{per_thread}"


def quality_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (folds, then the multi-organ run when present)."""
    lines = [
        f"Config `{report['config']}`{' with ' + ', '.join(report['overrides']) if report['overrides'] else ''}, "
        f"{_limit_text(report)} of training per network and run, {report['machine']['cpu_threads']} threads.",
    ]
    cpu = report.get("clock") == "cpu"  # then the budget counted CPU time: show it beside the wall time
    if report["folds"]:
        lines += ["", "| train → test | network | spleen Dice | HD95 (mm) | volume pred / ref (mL) | self-fit Dice | "
                      "epochs | iterations | wall s |" + (" CPU s per thread |" if cpu else ""),
                  "|---|---|---|---|---|---|---|---|---|" + ("---|" if cpu else "")]
    for fold in report["folds"]:
        for name, result in fold["results"].items():
            rows = [(f"{name}, seed {r['seed']}", r) for r in result.get("per_seed", [])]
            if len(rows) != 1:  # one seed: its row is the fold's figure, no mean row
                rows.append((f"**{name}, mean of {len(rows)} seeds**" if rows else name, result))
            for label, r in rows:
                lines.append(f"| {fold['train']} → {fold['test']} | {label} | {r['dice']:.3f} | {r['hd95_mm']:.1f} | "
                             f"{r['volume_pred_ml']:.0f} / {r['volume_ref_ml']:.0f} | {r['self_fit_dice']:.3f} | "
                             f"{r['epochs_run']:g} | {r['iterations']:g} | {r['train_seconds']:.0f} |"
                             + (f" {r['clock_seconds']:.0f} |" if cpu else ""))
    if "mean_dice" in report:
        means = ", ".join(f"{name} {dice:.3f}" for name, dice in report["mean_dice"].items())
        seeds = report.get("seeds") or []
        if len(seeds) > 1:
            means += f" (each fold averaged over seeds {', '.join(map(str, seeds))})"
        elif seeds:
            means += f" (seed {seeds[0]})"
        lines += ["", f"Mean cross-patient spleen Dice: {means}."]
    multi = report.get("multi_organ")
    if multi:
        organs = multi["organs"]
        lines += ["", f"Multi-organ: trained on {multi['train']} ({', '.join(organs)}); self-fit Dice per organ, "
                      f"and the spleen on {multi['test']}.", "",
                  "| network | " + " | ".join(organs) + f" | spleen on {multi['test']} | epochs |",
                  "|---|" + "---|" * (len(organs) + 2)]
        for name, r in multi["results"].items():
            cells = " | ".join(f"{r['self_fit'][o]['dice']:.3f}" for o in organs)
            lines.append(f"| {name} | {cells} | {r['test_spleen']['dice']:.3f} | {r['epochs_run']} |")
    return "\n".join(lines) + "\n"
