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
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medt3d import __version__
from medt3d.config import Config
from medt3d.data.geometry import voxel_spacing
from medt3d.data.readers import DICOM, detect_kind
from medt3d.devices import resolve_device
from medt3d.distributed import DistInfo, cleanup_distributed, init_distributed, shard
from medt3d.errors import FULL_OR_READ_ONLY, INTERNAL_ERROR, USER_ERRORS, InputError
from medt3d.inference.cases import Case, channel_file, check_no_overwrite, discover_cases, group_channel_files
from medt3d.inference.ensemble import load_members, members_predictor
from medt3d.inference.inferer import inference_window
from medt3d.inference.model_info import describe_model, same_model
from medt3d.inference.options import InferOptions
from medt3d.inference.outputs import OUTPUTS, OutputContext, case_outputs
from medt3d.inference.predictor import (
    Predictor,
    peak_rss_mb,
)
from medt3d.inference.shards import SUMMARY_NAME, select_shard, summarize, write_cohort
from medt3d.inference.statistics import structure_statistics
from medt3d.io_utils import atomic_path, check_writable_dir, leftover_temp_files
from medt3d.label_table import label_table
from medt3d.locks import FOLDER_LOCK, FolderLock, shard_lock_name

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

#: requested outputs by key, as messages name them
_OUTPUT_NAMES = {**{f.key: f.title for f in OUTPUTS.values()}, "statistics": "statistics"}


def class_volumes_ml(label: Any, affine: Any, num_classes: int) -> tuple[list[int], list[float]]:
    """Voxel count and volume in mL of every class value 0..num_classes-1."""
    values = torch.as_tensor(label).detach().cpu().flatten()  # bincount on uint8 needs no int64 copy
    counts = torch.bincount(values, minlength=num_classes)[:num_classes].tolist()
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    return [int(c) for c in counts], [float(c) * voxel_ml for c in counts]


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


# --------------------------------------------------------------------------- the batch


def _settings(cfg: Config, device: torch.device) -> dict[str, Any]:
    i = cfg.infer
    window = inference_window(cfg)
    return {"roi_size": window if isinstance(window, str) else list(window), "overlap": i.overlap, "mode": i.mode,
            "padding_mode": i.padding_mode, "sw_batch_size": i.sw_batch_size, "tta_flips": i.tta_flips, "largest_component": i.largest_component,
            "precision": i.precision, "engine": i.engine, "resample": i.resample, "device": str(device),
            "spacing_mm": cfg.preprocess.spacing and
            list(cfg.preprocess.spacing), "orientation": cfg.preprocess.orientation}


def _run_case(case: Case, predictor: Predictor, out_dir: Path, options: InferOptions, model_info: dict[str, Any],
              table: list[dict[str, Any]], info: DistInfo, loaded: Future | None = None) -> CaseResult:
    """Predict one case and write its files (all or none)."""
    cfg = predictor.cfg
    start = time.perf_counter()
    assert case.path is not None
    kind = detect_kind(case.path)
    prediction = predictor.predict(case.source, keep_image=options.statistics, loaded=loaded, series_uid=options.series_uid)
    write_start = time.perf_counter()
    peak_rss_mb(reset=True)
    paths = case_outputs(out_dir, case.name, options.output_naming)
    context = OutputContext(case.name, case.path, kind, prediction, table, f"medt3d {cfg.network.name}", options.series_uid)
    counts, volumes = class_volumes_ml(prediction.label, prediction.affine, cfg.data.num_classes)
    written: dict[str, Path] = {}
    notes: list[str] = []
    failed_outputs: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        # entered first, renamed last: a sidecar means the case is complete
        sidecar_tmp = stack.enter_context(atomic_path(paths["sidecar"]))
        _write_outputs(stack, context, paths, options.output_formats, written, notes, failed_outputs)
        statistics = None
        if prediction.image is not None:
            statistics = _requested("statistics", case.name, failed_outputs, notes, structure_statistics,
                                    prediction.image, prediction.label, table)
        end = time.perf_counter()
        seconds = end - start
        sidecar = {
            "case": case.name,
            "input": str(case.path.resolve()),
            "input_files": [str(f.resolve()) for f in (case.files or [case.path])],
            "input_kind": kind,
            "outputs": {k: v.name for k, v in written.items()},
            "shape": [int(s) for s in prediction.label.shape[1:]],
            "spacing_mm": voxel_spacing(prediction.affine),
            "affine": np.asarray(prediction.affine).tolist(),
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


def _write_outputs(stack: contextlib.ExitStack, context: OutputContext, paths: dict[str, Path],
                   formats: Sequence[str], written: dict[str, Path], notes: list[str], failed: dict[str, str]) -> None:
    """Write every output of :data:`~medt3d.inference.outputs.OUTPUTS` this case asks for, in registry order,
    each into a temporary file renamed when ``stack`` closes; record what was written, notes and failures."""
    for fmt in OUTPUTS.values():
        if not (fmt.when(context) if fmt.when is not None else fmt.name in formats):
            continue
        if fmt.needs_dicom and context.kind != DICOM:
            notes.append(f"no {fmt.title}: the input is {context.kind}, not a DICOM series")
            continue
        target = paths[fmt.key]

        def write(tmp: Path, fmt: Any = fmt) -> list[str] | None:
            return fmt.write(context, tmp)

        if fmt.required:  # its failure fails the case: no file of it is kept
            made = _staged(stack, target, write)
        else:
            made = _requested(fmt.key, context.case, failed, notes, _staged, stack, target, write)
            if fmt.key in failed:
                continue
        notes.extend(made or [])
        written[fmt.key] = target


def _staged(stack: contextlib.ExitStack, target: Path, write: Any) -> Any:
    """``write(tmp)`` into a temporary file renamed onto ``target`` with the case's other files (when
    ``stack`` closes), returning what ``write`` returns; on failure the temporary file is removed and the
    error raised."""
    manager = atomic_path(target)
    tmp = manager.__enter__()
    try:
        made = write(tmp)
    except BaseException:
        manager.__exit__(*sys.exc_info())
        raise
    stack.push(manager.__exit__)
    return made


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


def run_inference(inputs: Sequence[str | Path], output: str | Path,
                  model: str | Path | Sequence[str | Path] | None = None,
                  options: InferOptions | None = None,
                  network: tuple[torch.nn.Module, Config] | None = None) -> dict[str, Any]:
    """Predict every case in ``inputs`` and write results and ``summary.json`` into ``output``.

    Args:
        inputs: NIfTI/NRRD files, DICOM series folders, or folders holding them.
        output: the output folder (created).
        model: checkpoint file, training run folder or exported bundle
            (see :func:`medt3d.models.loading.load_model`), a cross-validation folder, or a list of these:
            an ensemble (:mod:`medt3d.inference.ensemble`).
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
        raise InputError("run_inference got both or neither of model and network; give either a model path or a "
                         "(network, config) pair")
    out_dir = Path(output)
    started = time.time()
    cases = discover_cases(inputs, out_dir)
    check_no_overwrite(cases, out_dir)
    check_writable_dir(out_dir)
    members, net = None, None
    if network is None:  # one model, several (an ensemble) or a cross-validation folder
        members = load_members([model] if isinstance(model, (str, Path)) else model)  # type: ignore[list-item]
        cfg = members.cfg
    else:
        net, cfg = network
    cfg = options.apply(cfg)
    everyone = group_channel_files(cases, cfg.data.in_channels)
    if options.output_naming == "nnunet":  # nnU-Net names a case without its channel suffix: CASE_0000 -> CASE
        everyone = [replace(c, name=parts[0]) if (parts := channel_file(c.name)) and parts[1] == 0 else c
                    for c in everyone]
    cases = select_shard(everyone, options.shard)
    device = resolve_device(cfg.infer.device)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    lock = None
    try:
        if info.is_main:  # one job per folder, or per shard of it (D15)
            part = "" if options.shard is None else " --shard {}/{}".format(*options.shard)
            lock = FolderLock(out_dir, shard_lock_name(*options.shard) if part else FOLDER_LOCK, "medt3d infer" + part)
        _remove_leftover_temp_files(out_dir, started, None if options.shard is None else cases, options.output_naming)
        model_info = describe_model(model, cfg, members)  # type: ignore[arg-type]
        predictor = _make_predictor(members, net, cfg, device, options.progress and info.is_main)
        table = label_table(cfg)
        mine = shard(cases, info)
        results, interrupted = _run_cases(mine, predictor, out_dir, options, model_info, table, info)
        if interrupted is not None and info.enabled:
            raise interrupted
        results = _gather(results, info)
        not_run = sorted({c.name for c in mine} - {r.case for r in results}) if interrupted else []
        summary = summarize([asdict(r) for r in results], model_info, out_dir, _settings(cfg, device),
                            info.world_size, not_run=not_run, shard=options.shard)
        if info.is_main:
            summary = write_cohort(out_dir, summary, options.shard, cohort=[c.name for c in everyone])
        if interrupted is not None:
            logger.warning("interrupted: %d case(s) done, %d not run; %s lists them; continue with --skip-existing",
                           len(results), len(not_run), out_dir / SUMMARY_NAME)
            raise interrupted
        return summary
    finally:
        if lock is not None:
            lock.release()
        cleanup_distributed()


def _make_predictor(members: Any, net: torch.nn.Module | None, cfg: Config, device: torch.device,
                    progress: bool) -> Predictor:
    """The predictor of the loaded ``members`` (an ensemble's move to the device one at a time), else of ``net``."""
    if members is not None:
        return members_predictor(members, cfg, device, progress)
    if cfg.infer.engine != "torch":
        raise InputError("run_inference(network=...) runs the torch module; pass model= a bundle exported "
                         "with --onnx to run it on onnxruntime")
    return Predictor(net.to(device), cfg, device, progress=progress)


def _run_cases(mine: list[Case], predictor: Predictor, out_dir: Path, options: InferOptions,
               model_info: dict[str, Any], table: list[dict[str, Any]], info: DistInfo
               ) -> tuple[list[CaseResult], KeyboardInterrupt | None]:
    """This process's cases in order, the next one read ahead; stops at Ctrl-C or SIGTERM (returned)."""
    results: list[CaseResult] = []
    bar = tqdm(mine, desc="cases" if not info.enabled else f"cases (rank {info.rank})", unit="case",
               disable=not options.progress, position=info.rank if info.enabled else None)
    # one reader thread reads the next scan while this one is predicted: at most one case ahead
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medt3d-read") as reader:
        ahead: dict[int, Future] = {}

        def read_ahead(index: int) -> None:
            if index < len(mine) and mine[index].path is not None and not _skippable(
                    mine[index], out_dir, options, model_info):
                ahead[index] = reader.submit(predictor.load, mine[index].source, options.series_uid)

        try:
            read_ahead(0)
            for index, case in enumerate(bar):
                bar.set_postfix_str(case.name, refresh=False)
                loaded = ahead.pop(index, None)
                read_ahead(index + 1)
                results.append(_one(case, predictor, out_dir, options, model_info, table, info, loaded))
        except KeyboardInterrupt as err:  # the case in progress left no file (atomic writes)
            for future in ahead.values():
                future.cancel()
            return results, err
    return results, None


def _remove_leftover_temp_files(out_dir: Path, before: float, cases: Sequence[Case] | None = None,
                                naming: str = "medt3d") -> None:
    """Delete the atomic-write temp files a killed run left in ``out_dir`` (older than this run: other
    ranks of this run may be writing theirs); a shard removes only those of its own ``cases``."""
    targets = None if cases is None else {p.name for c in cases for p in case_outputs(out_dir, c.name, naming).values()}
    for path in leftover_temp_files(out_dir, before=before):
        if targets is not None and not any(path.name.startswith(f".{name}.") for name in targets):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            logger.info("removed %s, left by an interrupted run", path)


def _write_peak() -> dict[str, float]:
    return {} if (peak := peak_rss_mb(reset=True)) is None else {"write": peak}


def _skippable(case: Case, out_dir: Path, options: InferOptions, model_info: dict[str, Any]) -> bool:
    """``--skip-existing`` and the case's sidecar and label are there, made by the same model."""
    paths = case_outputs(out_dir, case.name, options.output_naming)
    return options.skip_existing and paths["sidecar"].is_file() and paths["label"].is_file() \
        and same_model(paths["sidecar"], model_info) and not _had_failed_outputs(paths["sidecar"])


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
    paths = case_outputs(out_dir, case.name, options.output_naming)
    if _skippable(case, out_dir, options, model_info):
        return CaseResult(case=case.name, input=case.input, status="skipped", rank=info.rank,
                          outputs={k: str(v) for k, v in paths.items() if v.is_file()})
    start = time.perf_counter()
    try:
        return _run_case(case, predictor, out_dir, options, model_info, table, info, loaded)
    except OSError as err:
        if err.errno in FULL_OR_READ_ONLY:  # every later case would fail too: stop the batch (exit code 3)
            raise OSError(err.errno, f"writing case {case.name} into {out_dir} failed: {err.strerror or err}; free "
                                     "space or make it writable, then rerun with --skip-existing") from None
        message = str(err) if isinstance(err, USER_ERRORS) else f"{type(err).__name__}: {err}"
    except USER_ERRORS as err:
        message = str(err)
    except Exception as err:  # an unexpected failure of one case must not stop the batch: a bug, said as one
        logger.warning("case %s: traceback of the internal error below\n%s", case.name, traceback.format_exc())
        message = (f"{INTERNAL_ERROR}: {type(err).__name__}: {err}; report it "
                   "with the traceback in the log")
    logger.error("case %s failed: %s", case.name, message)
    return CaseResult(case=case.name, input=case.input, status="failed", error=message, rank=info.rank,
                      seconds=round(time.perf_counter() - start, 3))
