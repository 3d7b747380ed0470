"""``medt3d infer``: predict a batch of scans with one model, case by case, with a summary.

For each case (a NIfTI/NRRD file or a DICOM series folder) the runner writes, into ``OUT_DIR``:

- ``<case>_seg.nii.gz``: the label volume on the scan's own grid (shape and affine of the scan as loaded);
- ``<case>_probs.nii.gz``: per-class probabilities (X, Y, Z, C), with ``--save-probabilities``;
- ``<case>_seg.seg.nrrd``: a 3D Slicer segmentation with segment names, colours and codes, with
  ``--output-format seg-nrrd``;
- ``<case>_seg.dcm``: a DICOM SEG referencing the source series, with ``--output-format dicom-seg`` and a
  DICOM input;
- ``<case>_seg.json``: the sidecar (label table, volume per class in mL, time, model, settings).

A case's files appear together or not at all (each is written to a temporary file and all are
renamed at the end, the sidecar last), so ``--skip-existing`` can trust a sidecar: a case with one
is finished. A case that fails is recorded with its error and the batch goes on; ``summary.json``
lists every case and the exit code is 1 when any failed. A requested output (DICOM SEG, ``.seg.nrrd``,
statistics) that cannot be made fails its case too: the reason is in the summary, the NIfTI label and
the sidecar (with ``failed_outputs``) are kept, and ``--skip-existing`` does that case again.

Under ``torchrun`` the cases are split across ranks (round robin, so none is done twice); rank 0
gathers the results and writes the summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medt3d import __version__
from medt3d.config import OUTPUT_FORMATS, Config
from medt3d.data.datalist import channel_file, is_label_path
from medt3d.data.geometry import voxel_spacing
from medt3d.data.io import DICOM, detect_kind, find_inputs, strip_suffix
from medt3d.data.nifti import save_nifti
from medt3d.devices import resolve_device
from medt3d.distributed import DistInfo, cleanup_distributed, init_distributed, shard
from medt3d.errors import USER_ERRORS
from medt3d.inference.inferer import inference_window
from medt3d.inference.predictor import (
    Prediction,
    Predictor,
    override_config,
    peak_rss_mb,
    sha256_file,
)
from medt3d.inference.slicer_seg import SLICER_SEG_SUFFIX, write_slicer_segmentation
from medt3d.inference.statistics import VOLUMES_NAME, structure_statistics, volume_table
from medt3d.inference.viewer_tables import ITKSNAP_NAME, SLICER_NAME, itksnap_labels, slicer_color_table
from medt3d.io_utils import atomic_path, check_writable_dir, leftover_temp_files
from medt3d.label_table import label_table
from medt3d.models.loading import load_model, model_file

__all__ = [
    "Case",
    "CaseResult",
    "InferOptions",
    "case_outputs",
    "class_volumes_ml",
    "discover_cases",
    "group_channel_files",
    "run_inference",
]

logger = logging.getLogger("medt3d.inference.batch")

SEG_SUFFIX = "_seg.nii.gz"
PROB_SUFFIX = "_probs.nii.gz"
DICOM_SEG_SUFFIX = "_seg.dcm"
SIDECAR_SUFFIX = "_seg.json"
SUMMARY_NAME = "summary.json"
#: requested outputs by kind, as messages name them
_OUTPUT_NAMES = {"dicom_seg": "DICOM SEG", "seg_nrrd": "3D Slicer segmentation (.seg.nrrd)",
                 "statistics": "statistics"}
#: Exit codes of a batch: all cases done (or skipped), or at least one failed.
EXIT_OK, EXIT_FAILED = 0, 1


def class_volumes_ml(label: Any, affine: Any, num_classes: int) -> tuple[list[int], list[float]]:
    """Voxel count and volume in mL of every class value 0..num_classes-1."""
    values = torch.as_tensor(label).detach().cpu().flatten()  # bincount on uint8 needs no int64 copy
    counts = torch.bincount(values, minlength=num_classes)[:num_classes].tolist()
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    return [int(c) for c in counts], [float(c) * voxel_ml for c in counts]


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One scan to predict.

    Attributes:
        name: case name, unique in the batch; output files start with it.
        path: the file or DICOM series folder (None when the input itself was unusable).
        input: the command-line input it came from.
        error: why the input could not become a case (then ``path`` is None).
        files: one file per channel, for a multi-channel case given as nnU-Net-style channel files
            (``path`` is then the first); None for a case in one file or folder.
    """

    name: str
    path: Path | None
    input: str
    error: str | None = None
    files: list[Path] | None = None

    @property
    def source(self) -> Path | list[Path] | None:
        """What the predictor reads: the channel files, or the one path."""
        return self.files or self.path


@dataclass
class CaseResult:
    """How one case went: ``status`` is ``done``, ``skipped`` or ``failed``."""

    case: str
    input: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    rank: int = 0
    failed_outputs: dict[str, str] = field(default_factory=dict)  # optional outputs that could not be made


def _case_names(paths: Sequence[Path]) -> list[str]:
    """Output names: the file name without suffix (or the DICOM folder's name), made unique.

    Paths sharing a name are told apart by their folders below the deepest folder they share,
    e.g. ``a/ct.nii.gz`` and ``b/ct.nii.gz`` become ``a_ct`` and ``b_ct``.
    """
    names = [strip_suffix(p) for p in paths]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[name].append(i)
    for name, members in groups.items():
        if len(members) == 1:
            continue
        resolved = [paths[i].resolve() for i in members]
        common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
        for i, path in zip(members, resolved):
            rel = path.parent.relative_to(common).parts
            names[i] = "_".join([*rel, name]) if rel else name
    seen: dict[str, int] = defaultdict(int)
    for i, name in enumerate(names):  # still equal (e.g. ct.nii and ct.nii.gz in one folder)
        seen[name] += 1
        if seen[name] > 1:
            names[i] = f"{name}_{seen[name]}"
    return names


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def discover_cases(inputs: Sequence[str | Path], output: str | Path) -> list[Case]:
    """Expand the inputs into cases; an input that is missing or unusable becomes a failed case.

    Files inside ``output`` found by searching a folder are left out (they are earlier results), and
    so are labels (see :func:`medt3d.data.datalist.is_label_path`): a dataset folder gives its images.
    The order is deterministic (sorted), the same on every rank.

    Raises:
        ValueError: ``output`` is inside (or is) a DICOM input folder, or no inputs were given.
    """
    if not inputs:
        raise ValueError("no inputs given")
    out = Path(output)
    found: list[Path] = []
    failed: list[Case] = []
    for text in inputs:
        path = Path(text)
        try:
            cases = find_inputs([path], check=False)
        except (ValueError, FileNotFoundError) as err:
            failed.append(Case(name=strip_suffix(path) or str(text), path=None, input=str(text), error=str(err)))
            continue
        if path.is_dir():
            cases = [c for c in cases if c == path or not _inside(c, out)]
            # a dataset folder holds masks beside its images: segment the images only
            labels = [c for c in cases if c != path and is_label_path(c, path)]
            if labels:
                logger.info("%s: leaving out %d label file(s) (in masks/labels folders or named *_label, *_seg, "
                            "*_mask), e.g. %s", path, len(labels), labels[0])
                cases = [c for c in cases if c not in labels]
        found.extend(cases)
    for case in found:
        if case.is_dir() and (_inside(out, case)):
            raise ValueError(f"output folder {out} is inside the DICOM input folder {case}; "
                             "choose an output folder outside the inputs")
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p.resolve()))
    cases = [Case(name=n, path=p, input=str(p)) for n, p in zip(_case_names(unique), unique)]
    return cases + failed


def group_channel_files(cases: Sequence[Case], channels: int) -> list[Case]:
    """Join nnU-Net-style channel files (``<case>_0000``, ``<case>_0001``...) into one case each.

    Only for a model with several input channels. A case must have exactly the files
    ``_0000`` to ``_{channels-1:04d}``; otherwise it fails with the reason. Other inputs (a 4-D
    file of channels, a DICOM folder) stay cases of their own.
    """
    if channels <= 1:
        return list(cases)
    groups: dict[tuple[Path, str], dict[int, Case]] = defaultdict(dict)
    out: list[Case] = []
    for case in cases:
        parts = channel_file(strip_suffix(case.path)) if case.path is not None and case.path.is_file() else None
        if parts is None:
            out.append(case)
            continue
        groups[(case.path.parent, parts[0])][parts[1]] = case
    for (_, name), members in sorted(groups.items(), key=lambda item: str(item[0])):
        ordered = [members[c] for c in sorted(members)]
        if sorted(members) != list(range(channels)):
            found = ", ".join(f"_{c:04d}" for c in sorted(members))
            out.append(Case(name=name, path=None, input=str(ordered[0].path), error=(
                f"case {name} in {ordered[0].path.parent}: channel files {found}, but the model takes {channels} "
                f"channels (_0000 to _{channels - 1:04d})")))
            continue
        out.append(Case(name=name, path=ordered[0].path, input=ordered[0].input,
                        files=[m.path for m in ordered if m.path is not None]))
    return sorted(out, key=lambda c: c.name)


def case_outputs(out_dir: Path, name: str) -> dict[str, Path]:
    """Output paths of a case by kind: ``label``, ``probabilities``, ``seg_nrrd``, ``dicom_seg``, ``sidecar``."""
    return {
        "label": out_dir / f"{name}{SEG_SUFFIX}",
        "probabilities": out_dir / f"{name}{PROB_SUFFIX}",
        "seg_nrrd": out_dir / f"{name}{SLICER_SEG_SUFFIX}",
        "dicom_seg": out_dir / f"{name}{DICOM_SEG_SUFFIX}",
        "sidecar": out_dir / f"{name}{SIDECAR_SUFFIX}",
    }


def _check_no_overwrite(cases: Sequence[Case], out_dir: Path) -> None:
    """Refuse outputs that would replace an input file or land inside a DICOM input folder."""
    inputs = {c.path.resolve() for c in cases if c.path is not None}
    for case in cases:
        for path in case_outputs(out_dir, case.name).values():
            resolved = path.resolve()
            if resolved in inputs:
                raise ValueError(f"output {path} would overwrite the input {resolved}; choose another output folder")
            for other in inputs:
                if other.is_dir() and _inside(resolved, other):
                    raise ValueError(f"output {path} would be written inside the DICOM input folder {other}")


# --------------------------------------------------------------------------- the batch


@dataclass
class InferOptions:
    """Settings of a batch; ``None`` keeps the model config's value.

    Attributes:
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
        roi_size: sliding-window size in voxels (``infer.roi_size``).
        overlap: window overlap (``infer.overlap``).
        mode: blending, ``gaussian`` or ``constant`` (``infer.mode``).
        sw_batch_size: windows per forward pass (``infer.sw_batch_size``).
        tta_flips: test-time augmentation by flips (``infer.tta_flips``).
        largest_component: keep the largest component per class (``infer.largest_component``).
        save_probabilities: also write per-class probabilities (``infer.save_probabilities``).
        precision: ``fp32``, ``bf16`` or ``fp16`` (``infer.precision``).
        resample: ``labels`` or ``probabilities`` back to the scan's grid (``infer.resample``).
        output_formats: label formats to write, from :data:`OUTPUT_FORMATS`: ``nifti`` (always
            written), ``seg-nrrd`` (3D Slicer segmentation), ``dicom-seg`` (DICOM SEG, for DICOM inputs).
        statistics: per-structure intensity statistics of the scan (HU for CT) in each sidecar, and
            their means in the batch's ``volumes.csv``.
        skip_existing: leave cases that already have their sidecar and label in the output folder, made
            by the same model (the sidecar's weights hash and labels); others are segmented again.
        progress: progress bars over cases and windows.
    """

    device: str | None = None
    roi_size: Sequence[int] | str | None = None
    overlap: float | None = None
    mode: str | None = None
    sw_batch_size: int | None = None
    tta_flips: bool | None = None
    largest_component: bool | None = None
    save_probabilities: bool | None = None
    precision: str | None = None
    resample: str | None = None
    output_formats: Sequence[str] = ("nifti",)
    statistics: bool = False
    skip_existing: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [f for f in self.output_formats if f not in OUTPUT_FORMATS]
        if unknown:
            raise ValueError(f"unknown output format(s) {unknown}; choose from {list(OUTPUT_FORMATS)}")
        self.output_formats = ("nifti", *dict.fromkeys(f for f in self.output_formats if f != "nifti"))

    def apply(self, cfg: Config) -> Config:
        """The model's config with these overrides (validated)."""
        return override_config(cfg, {
            "infer.roi_size": self.roi_size if self.roi_size is None or isinstance(self.roi_size, str)
            else list(self.roi_size),
            "infer.overlap": self.overlap,
            "infer.mode": self.mode,
            "infer.sw_batch_size": self.sw_batch_size,
            "infer.tta_flips": self.tta_flips,
            "infer.largest_component": self.largest_component,
            "infer.save_probabilities": self.save_probabilities,
            "infer.precision": self.precision,
            "infer.resample": self.resample,
            "infer.device": self.device,
        })


def _model_description(model_path: str | Path | None, cfg: Config) -> dict[str, Any]:
    info: dict[str, Any] = {"network": cfg.network.name, "preset": cfg.network.preset,
                            "labels": list(cfg.data.labels), "in_channels": cfg.data.in_channels}
    if model_path is not None:
        file = model_file(model_path)
        info.update({"path": str(Path(model_path).resolve()), "file": str(file.resolve()),
                     "sha256": sha256_file(file)})
    return info


def _settings(cfg: Config, device: torch.device) -> dict[str, Any]:
    i = cfg.infer
    window = inference_window(cfg)
    return {"roi_size": window if isinstance(window, str) else list(window), "overlap": i.overlap, "mode": i.mode,
            "sw_batch_size": i.sw_batch_size, "tta_flips": i.tta_flips, "largest_component": i.largest_component,
            "precision": i.precision, "resample": i.resample, "device": str(device),
            "spacing_mm": cfg.preprocess.spacing and
            list(cfg.preprocess.spacing), "orientation": cfg.preprocess.orientation}


def _run_case(case: Case, predictor: Predictor, out_dir: Path, options: InferOptions, model_info: dict[str, Any],
              table: list[dict[str, Any]], info: DistInfo, loaded: Future | None = None) -> CaseResult:
    """Predict one case and write its files (all or none)."""
    cfg = predictor.cfg
    start = time.perf_counter()
    assert case.path is not None
    kind = detect_kind(case.path)
    prediction: Prediction = predictor.predict(case.source, keep_image=options.statistics, loaded=loaded)
    write_start = time.perf_counter()
    peak_rss_mb(reset=True)
    paths = case_outputs(out_dir, case.name)
    label, affine = prediction.label, prediction.affine
    counts, volumes = class_volumes_ml(label, affine, cfg.data.num_classes)
    written: dict[str, Path] = {"label": paths["label"]}
    notes: list[str] = []
    failed_outputs: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        # entered first, renamed last: a sidecar means the case is complete
        sidecar_tmp = stack.enter_context(atomic_path(paths["sidecar"]))
        save_nifti(label, affine, stack.enter_context(atomic_path(paths["label"])), dtype=None)
        if prediction.probabilities is not None:
            save_nifti(prediction.probabilities, affine, stack.enter_context(atomic_path(paths["probabilities"])),
                       dtype=np.float32)
            written["probabilities"] = paths["probabilities"]
        if "seg-nrrd" in options.output_formats:
            _requested("seg_nrrd", case.name, failed_outputs, notes, _staged, stack, paths["seg_nrrd"],
                       lambda tmp: write_slicer_segmentation(label, affine, tmp, table))
            if "seg_nrrd" not in failed_outputs:
                written["seg_nrrd"] = paths["seg_nrrd"]
        if "dicom-seg" in options.output_formats:
            if kind == DICOM:
                from medt3d.inference import dicom_seg

                def write_seg(tmp: Path) -> None:
                    notes.extend(dicom_seg.write_dicom_seg(label, case.path, tmp, table,
                                                           model_name=f"medt3d {cfg.network.name}"))

                _requested("dicom_seg", case.name, failed_outputs, notes, _staged, stack, paths["dicom_seg"],
                           write_seg)
                if "dicom_seg" not in failed_outputs:
                    written["dicom_seg"] = paths["dicom_seg"]
                for note in notes:  # one line per case: what the SEG's copies of the source headers got
                    if "filled in memory" in note:
                        logger.info("case %s: %s", case.name, note)
            else:
                notes.append(f"no DICOM SEG: the input is {kind}, not a DICOM series")
        statistics = None
        if prediction.image is not None:
            statistics = _requested("statistics", case.name, failed_outputs, notes, structure_statistics,
                                    prediction.image, label, table)
        end = time.perf_counter()
        seconds = end - start
        sidecar = {
            "case": case.name,
            "input": str(case.path.resolve()),
            "input_files": [str(f.resolve()) for f in (case.files or [case.path])],
            "input_kind": kind,
            "outputs": {k: v.name for k, v in written.items()},
            "shape": [int(s) for s in label.shape[1:]],
            "spacing_mm": voxel_spacing(affine),
            "affine": np.asarray(affine).tolist(),
            "labels": table,
            "volumes_ml": {t["name"]: round(v, 4) for t, v in zip(table, volumes)},
            "voxels": {t["name"]: c for t, c in zip(table, counts)},
            "statistics": statistics,
            "seconds": round(seconds, 3),
            "timings": {**prediction.timings, "write_s": round(end - write_start, 3)},
            "peak_rss_mb": {**prediction.peak_rss_mb, **_write_peak()},
            "model": model_info,
            "inference": {**_settings(cfg, predictor.device), "window_run": prediction.window},
            "notes": notes,
            "failed_outputs": failed_outputs,
            "rank": info.rank,
            "world_size": info.world_size,
            "host": platform.node(),
            "medt3d_version": __version__,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        sidecar_tmp.write_text(json.dumps(sidecar, indent=2))
    written["sidecar"] = paths["sidecar"]
    error = None
    if failed_outputs:  # asked for and not written: the case failed, its NIfTI label and sidecar stay
        error = "requested output(s) not written: " + "; ".join(f"{k}: {v}" for k, v in failed_outputs.items())
        logger.error("case %s failed: %s", case.name, error)
    return CaseResult(case=case.name, input=str(case.path), status="failed" if error else "done",
                      seconds=round(seconds, 3), error=error, outputs={k: str(v) for k, v in written.items()},
                      rank=info.rank, failed_outputs=failed_outputs)


def _staged(stack: contextlib.ExitStack, target: Path, write: Any) -> None:
    """``write(tmp)`` into a temporary file renamed onto ``target`` with the case's other files (when
    ``stack`` closes); on failure the temporary file is removed and the error raised."""
    manager = atomic_path(target)
    tmp = manager.__enter__()
    try:
        write(tmp)
    except BaseException:
        manager.__exit__(*sys.exc_info())
        raise
    stack.push(manager.__exit__)


def _requested(kind: str, case: str, failed: dict[str, str], notes: list[str], make: Any, *args: Any) -> Any:
    """``make(*args)``, or None with the reason recorded in ``failed[kind]`` and ``notes`` when it fails.

    OS errors (a full or read-only disk) and running out of memory stop the case as before.
    """
    try:
        return make(*args)
    except (OSError, MemoryError):
        raise
    except Exception as err:  # any other failure of a requested output is that output's, reported by name
        reason = " ".join(str(err).split()) or type(err).__name__
        name = _OUTPUT_NAMES.get(kind, kind)
        logger.warning("case %s: no %s: %s", case, name, reason)
        notes.append(f"no {name}: {reason}")
        failed[kind] = reason
        return None


def _gather(results: list[CaseResult], info: DistInfo) -> list[CaseResult]:
    if not info.enabled:
        return results
    import torch.distributed as dist

    everyone: list[list[dict[str, Any]] | None] = [None] * info.world_size
    dist.all_gather_object(everyone, [asdict(r) for r in results])
    merged = [CaseResult(**r) for part in everyone for r in (part or [])]
    return sorted(merged, key=lambda r: r.case)


def run_inference(inputs: Sequence[str | Path], output: str | Path, model: str | Path | None = None,
                  options: InferOptions | None = None,
                  network: tuple[torch.nn.Module, Config] | None = None) -> dict[str, Any]:
    """Predict every case in ``inputs`` and write results and ``summary.json`` into ``output``.

    Args:
        inputs: NIfTI/NRRD files, DICOM series folders, or folders holding them.
        output: the output folder (created).
        model: checkpoint file, training run folder or exported bundle
            (see :func:`medt3d.models.loading.load_model`).
        options: inference settings; defaults come from the model's config.
        network: an already built ``(model, config)`` instead of ``model`` (for tests and benchmarks).

    Returns:
        The summary (also written to ``output/summary.json`` by rank 0): ``exit_code`` is 0 when
        no case failed, else 1; ``failed`` lists each failed case with its error.

    Raises:
        FileNotFoundError, ValueError: a bad model, bad options, or an output folder that would
            overwrite or sit inside an input; nothing is predicted then.
    """
    options = options or InferOptions()
    if (model is None) == (network is None):
        raise ValueError("give either a model path or a (network, config) pair")
    out_dir = Path(output)
    started = time.time()
    cases = discover_cases(inputs, out_dir)
    _check_no_overwrite(cases, out_dir)
    check_writable_dir(out_dir)
    _remove_leftover_temp_files(out_dir, before=started)

    if network is None:
        net, cfg = load_model(model)  # type: ignore[arg-type]
    else:
        net, cfg = network
    cfg = options.apply(cfg)
    cases = group_channel_files(cases, cfg.data.in_channels)
    device = resolve_device(cfg.infer.device)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        model_info = _model_description(model, cfg)
        predictor = Predictor(net.to(device), cfg, device, progress=options.progress and info.is_main)
        table = label_table(cfg)
        mine = shard(cases, info)
        results: list[CaseResult] = []
        bar = tqdm(mine, desc="cases" if not info.enabled else f"cases (rank {info.rank})", unit="case",
                   disable=not options.progress, position=info.rank if info.enabled else None)
        # one reader thread reads the next scan while this one is predicted: at most one case ahead
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medt3d-read") as reader:
            ahead: dict[int, Future] = {}

            def read_ahead(index: int) -> None:
                if index < len(mine) and mine[index].path is not None and not _skippable(
                        mine[index], out_dir, options, model_info):
                    ahead[index] = reader.submit(predictor.load, mine[index].source)

            read_ahead(0)
            for index, case in enumerate(bar):
                bar.set_postfix_str(case.name, refresh=False)
                loaded = ahead.pop(index, None)
                read_ahead(index + 1)
                results.append(_one(case, predictor, out_dir, options, model_info, table, info, loaded))
        results = _gather(results, info)
        summary = _summary(results, model_info, out_dir, cfg, device, info)
        if info.is_main:
            from medt3d.io_utils import atomic_write_text

            finished = [case_outputs(out_dir, r.case)["sidecar"] for r in results if r.status in ("done", "skipped")]
            if finished:
                atomic_write_text(out_dir / VOLUMES_NAME, volume_table(sorted(finished)))
                atomic_write_text(out_dir / ITKSNAP_NAME, itksnap_labels(table))  # names and colours for viewers
                atomic_write_text(out_dir / SLICER_NAME, slicer_color_table(table))
            atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2))
        return summary
    finally:
        cleanup_distributed()


def _remove_leftover_temp_files(out_dir: Path, before: float) -> None:
    """Delete the atomic-write temp files a killed run left in ``out_dir`` (older than this run: other
    ranks of this run may be writing theirs)."""
    for path in leftover_temp_files(out_dir, before=before):
        with contextlib.suppress(OSError):
            path.unlink()
            logger.info("removed %s, left by an interrupted run", path)


def _same_model(sidecar: Path, model_info: dict[str, Any]) -> bool:
    """Whether the outputs of ``sidecar`` were made by this model (same weights file hash and labels)."""
    try:
        previous = json.loads(sidecar.read_text()).get("model", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    keys = ("sha256", "labels")
    if all(previous.get(k) == model_info.get(k) for k in keys):
        return True
    logger.warning("%s: made by another model (sha256 %s, this one %s): segmenting the case again", sidecar,
                   previous.get("sha256", "unknown"), model_info.get("sha256", "unknown"))
    return False


def _write_peak() -> dict[str, float]:
    peak = peak_rss_mb(reset=True)
    return {} if peak is None else {"write": peak}


def _skippable(case: Case, out_dir: Path, options: InferOptions, model_info: dict[str, Any]) -> bool:
    """``--skip-existing`` and the case's sidecar and label are there, made by the same model."""
    paths = case_outputs(out_dir, case.name)
    return options.skip_existing and paths["sidecar"].is_file() and paths["label"].is_file() \
        and _same_model(paths["sidecar"], model_info) and not _had_failed_outputs(paths["sidecar"])


def _had_failed_outputs(sidecar: Path) -> bool:
    """Whether the case of ``sidecar`` lacks an output that was asked for (it is done again)."""
    try:
        return bool(json.loads(sidecar.read_text()).get("failed_outputs"))
    except (OSError, ValueError, AttributeError):
        return True


def _one(case: Case, predictor: Predictor, out_dir: Path, options: InferOptions, model_info: dict[str, Any],
         table: list[dict[str, Any]], info: DistInfo, loaded: Future | None = None) -> CaseResult:
    """One case, with every failure turned into a failed result (the batch goes on).

    ``loaded`` is the scan already being read in another thread (its failure is this case's).
    """
    if case.path is None:
        logger.error("%s: %s", case.input, case.error)
        return CaseResult(case=case.name, input=case.input, status="failed", error=case.error, rank=info.rank)
    paths = case_outputs(out_dir, case.name)
    if _skippable(case, out_dir, options, model_info):
        return CaseResult(case=case.name, input=case.input, status="skipped", rank=info.rank,
                          outputs={k: str(v) for k, v in paths.items() if v.is_file()})
    start = time.perf_counter()
    try:
        return _run_case(case, predictor, out_dir, options, model_info, table, info, loaded)
    except USER_ERRORS as err:
        message = str(err)
    except Exception as err:  # an unexpected failure of one case must not stop the batch
        logger.debug("%s", traceback.format_exc())
        message = f"{type(err).__name__}: {err}"
    logger.error("case %s failed: %s", case.name, message)
    return CaseResult(case=case.name, input=case.input, status="failed", error=message, rank=info.rank,
                      seconds=round(time.perf_counter() - start, 3))


def _summary(results: list[CaseResult], model_info: dict[str, Any], out_dir: Path, cfg: Config,
             device: torch.device, info: DistInfo) -> dict[str, Any]:
    failed = [r for r in results if r.status == "failed"]
    return {
        "model": model_info,
        "output": str(out_dir.resolve()),
        "n_cases": len(results),
        "done": sum(r.status == "done" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "n_failed": len(failed),
        "failed": [{"case": r.case, "input": r.input, "error": r.error} for r in failed],
        "failed_outputs": [{"case": r.case, "output": kind, "error": error}
                           for r in results for kind, error in r.failed_outputs.items()],
        "exit_code": EXIT_FAILED if failed else EXIT_OK,
        "inference": _settings(cfg, device),
        "world_size": info.world_size,
        "cases": [asdict(r) for r in results],
    }
