"""``medt3d export``: a trained checkpoint -> a MONAI bundle that deploys it.

The bundle (see :func:`export_bundle`)::

    BUNDLE_DIR/
      LICENSE
      docs/README.md              generated: task, input, training, metrics, how to run, limits
      configs/metadata.json       MONAI schema 20240725
      configs/medt3d.yaml         the checkpoint's resolved medt3d config
      configs/inference.json      \\
      configs/evaluate.json        | MONAI model-zoo keys; every component built by medt3d's own
      configs/train.json           | builders from configs/medt3d.yaml (medt3d.bundle.configs)
      configs/multi_gpu_train.json/
      configs/logging.conf
      models/model.pt             state_dict
      models/model.ts             TorchScript (monai.bundle.ckpt_export), metadata + inference.json embedded
      models/model.onnx           with onnx=True (and configs/inference_onnx.json, to run it on onnxruntime)
      models/model_fp16.onnx      with onnx_precisions fp16 (for the GPU)
      models/model_int8.onnx      with onnx_precisions int8 (for the CPU; calibrated on training windows)

Nothing is written unless everything checks out: the checkpoint must fit the network its config
describes and the bundle source's contract (modality, channels, labels); the bundle is assembled
in a temporary folder, checked (MONAI workflow properties, network in/out, TorchScript against
the checkpoint) and only then renamed into place.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from medt3d.bundle.configs import (
    evaluate_config,
    inference_config,
    inference_onnx_config,
    logging_conf,
    multi_gpu_train_config,
    train_config,
)
from medt3d.bundle.docs import ModelFacts, build_metadata, build_readme, find_summary, summary_from
from medt3d.bundle.onnx_precisions import write_precisions
from medt3d.bundle.source import (
    BundleSource,
    contract_differences,
    generic_source,
    load_bundle_source,
    recipe_differences,
)
from medt3d.config import Config, save_config
from medt3d.errors import InputError
from medt3d.io_utils import atomic_dir, atomic_save, atomic_write_text
from medt3d.models.archive import zip_bundle
from medt3d.models.checkpoint import load_checkpoint
from medt3d.models.layout import BUNDLE_CONFIG
from medt3d.models.loading import model_from_checkpoint

__all__ = [
    "ExportResult",
    "TS_TOLERANCE",
    "ONNX_TOLERANCE",
    "accepts_other_sizes",
    "export_onnx",
    "export_bundle",
    "verify_bundle",
]

logger = logging.getLogger("medt3d.export")

#: Largest |logit| difference accepted between the checkpoint and models/model.ts, and models/model.onnx,
#: per unit of the largest |logit| when that exceeds 1 (float32 round-off grows with the values).
TS_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """Where the bundle went and what it holds."""

    bundle_dir: Path
    zip_path: Path | None
    torchscript: str
    onnx: bool
    onnx_agreement: dict[str, float]
    summary_path: Path | None
    metadata: dict[str, Any]


# --------------------------------------------------------------------------------------------- checks


def _deployable(cfg: Config) -> Config:
    """The checkpoint's config without machine-specific paths (cache folder, MLflow URI)."""
    return replace(cfg, data=replace(cfg.data, cache_dir=None), tracking=replace(cfg.tracking, mlflow_uri=None))


def _check_output(output: Path, zip_too: bool) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InputError(f"output {output} already exists and is not empty; medt3d export does not overwrite: "
                         "choose a new folder")
    zip_path = output.with_name(output.name + ".zip")
    if zip_too and zip_path.exists():
        raise InputError(f"{zip_path} already exists; medt3d export does not overwrite: choose a new output name")


# --------------------------------------------------------------------------------------------- writing


def _write_json(path: Path, values: Any) -> None:
    atomic_write_text(path, json.dumps(values, indent=4) + "\n")


def _write_configs(root: Path, cfg: Config) -> None:
    save_config(cfg, root / BUNDLE_CONFIG)
    _write_json(root / "configs" / "inference.json", inference_config())
    _write_json(root / "configs" / "evaluate.json", evaluate_config())
    _write_json(root / "configs" / "train.json", train_config())
    _write_json(root / "configs" / "multi_gpu_train.json", multi_gpu_train_config())
    atomic_write_text(root / "configs" / "logging.conf", logging_conf())


def _torchscript(root: Path, cfg: Config, network: torch.nn.Module) -> str:
    """Write models/model.ts with ``monai.bundle.ckpt_export``; script it, or trace it when scripting fails."""
    from monai.bundle import ckpt_export

    common = {
        "net_id": "network_def",
        "filepath": str(root / "models" / "model.ts"),
        "ckpt_file": str(root / "models" / "model.pt"),
        "meta_file": str(root / "configs" / "metadata.json"),
        "config_file": str(root / "configs" / "inference.json"),
        "bundle_root": str(root),
    }
    try:
        ckpt_export(**common, use_trace=False)
        return "script"
    except Exception as err:  # torch.jit.script raises many types for unsupported code
        reason = " ".join(str(err).split())[:300]
        logger.warning("TorchScript scripting failed (%s: %s); tracing on a %s patch instead",
                       type(err).__name__, reason, list(cfg.patch.roi_size))
    shape = [1, cfg.data.in_channels, *cfg.patch.roi_size]
    ckpt_export(**common, use_trace=True, input_shape=shape)
    return "trace"


def _other_size(cfg: Config) -> list[int]:
    """A patch size unlike the training ROI (odd edges), to check that exports are not tied to one size."""
    return [int(r) + k for r, k in zip(cfg.patch.roi_size, (1, 2, 3))]


def accepts_other_sizes(cfg: Config, network: torch.nn.Module) -> bool:
    """True when the network maps a (1, C, *size) input of another size than the ROI to logits of that size."""
    x = torch.zeros(1, cfg.data.in_channels, *_other_size(cfg))
    try:
        with torch.no_grad():
            out = network(x)
    except Exception:  # networks with fixed input sizes raise many error types
        return False
    return tuple(out.shape) == (1, cfg.data.num_classes, *x.shape[2:])


def export_onnx(network: torch.nn.Module, target: str | Path, example: torch.Tensor, any_size: bool) -> Path:
    """Write ``network`` as ONNX (opset 17): input ``image``, output ``pred``.

    Args:
        network: the network, in eval mode.
        target: the ``.onnx`` file to write.
        example: an input of the training ROI's size, traced through the network.
        any_size: make the spatial axes dynamic too (the batch axis always is).

    Raises:
        ValueError: the exporter failed; the message says why.
    """
    axes = {0: "batch", 2: "x", 3: "y", 4: "z"} if any_size else {0: "batch"}
    kwargs: dict[str, Any] = {"input_names": ["image"], "output_names": ["pred"], "opset_version": 17,
                              "dynamic_axes": {"image": axes, "pred": axes}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:  # the TorchScript-based exporter, which needs no onnxscript
                torch.onnx.export(network, (example,), str(target), dynamo=False, **kwargs)
            except TypeError:  # torch versions without the dynamo switch
                torch.onnx.export(network, (example,), str(target), **kwargs)
    except Exception as err:
        raise InputError(f"ONNX export of the network failed: {type(err).__name__}: {str(err)[:300]}; export "
                         "without --onnx (TorchScript and the weights are enough for MONAI)") from None
    return Path(target)


def _check_logits(root: Path, cfg: Config, network: torch.nn.Module, onnx: bool, any_size: bool) -> None:
    """models/model.ts (and model.onnx) must give the checkpoint's logits, on the ROI and (if any_size) another size."""
    from monai.data import load_net_with_metadata

    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(2, cfg.data.in_channels, *cfg.patch.roi_size, generator=generator)]
    if any_size:
        inputs.append(torch.rand(1, cfg.data.in_channels, *_other_size(cfg), generator=generator))
    ts, _, _ = load_net_with_metadata(str(root / "models" / "model.ts"))
    session = None
    if onnx:
        import onnxruntime as ort

        session = ort.InferenceSession(str(root / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    for x in inputs:
        shape = list(x.shape)
        with torch.no_grad():
            expected = network(x)
        scale = max(1.0, float(expected.abs().max()))
        with torch.no_grad():
            try:
                diff = float((ts(x) - expected).abs().max())
            except Exception as err:  # a TorchScript module raises torch.jit errors of its own
                raise InputError(f"models/model.ts fails on a {shape} input: {str(err)[:300]}; report it with "
                                 "the checkpoint's network settings") from None
        if not diff <= TS_TOLERANCE * scale:
            raise InputError(f"models/model.ts differs from the checkpoint by {diff:.3g} "
                             f"(> {TS_TOLERANCE * scale:.3g}) on a {shape} input; report it with the checkpoint's "
                             "network settings")
        if session is None:
            continue
        try:
            out = session.run(["pred"], {"image": x.numpy()})[0]
        except Exception as err:  # onnxruntime raises its own exception types
            raise InputError(f"models/model.onnx does not run in onnxruntime on a {shape} input: "
                             f"{str(err)[:300]}; export without --onnx") from None
        diff = float((torch.from_numpy(out) - expected).abs().max())
        if not diff <= ONNX_TOLERANCE * scale:
            raise InputError(f"models/model.onnx differs from the checkpoint by {diff:.3g} "
                             f"(> {ONNX_TOLERANCE * scale:.3g}) on a {shape} input; export without --onnx")


def verify_bundle(root: str | Path, dataset_dir: str | Path | None = None) -> None:
    """Check an exported bundle with MONAI's own tools.

    ``ConfigWorkflow(...).check_properties()`` for the inference and training workflows (and the
    evaluation and multi-GPU configs on top of them) must report nothing missing or wrong, and
    ``verify_net_in_out`` must pass for ``network_def`` against the metadata.

    Args:
        root: the bundle folder.
        dataset_dir: data to instantiate the workflows with; ``None`` checks inference with no cases and
            training on two probe phantoms.

    Raises:
        ValueError: naming the configs and the missing or wrong properties.
    """
    from monai.bundle import verify_net_in_out

    root = Path(root)
    runs = (
        ("infer", ["inference.json"]),
        ("infer", ["inference.json", "evaluate.json"]),
        ("train", ["train.json"]),
        ("train", ["train.json", "multi_gpu_train.json"]),
    )
    scratch = tempfile.mkdtemp(prefix="medt3d-verify-")  # handlers create their folders when they are built
    try:
        train_data = dataset_dir if dataset_dir is not None else _probe_data(root, Path(scratch) / "probe")
        for kind, names in runs:
            _check_workflow(root, kind, names, dataset_dir if kind == "infer" else train_data, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    configs = root / "configs"
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), device="cpu", bundle_root=str(root))


def _probe_data(root: Path, folder: Path) -> Path:
    """Two phantom cases, labelled with the bundle's classes only, for assembling ``train.json`` without user data.

    Building the training engine lists, checks and caches real files; a bundle exported from a
    checkpoint has none with it, so the check builds it on these.
    """
    import numpy as np

    from medt3d.config import load_config
    from medt3d.data.nifti import write_nifti
    from medt3d.data.phantoms import make_phantom

    data = load_config(root / BUNDLE_CONFIG).data
    num_classes = data.num_classes
    for index, split in enumerate(("train", "val")):
        phantom = make_phantom(index, shape=(32, 32, 32))
        # a multi-channel model gets its channels as one 4-D file (each a copy of the phantom)
        image = phantom.image if data.in_channels == 1 else np.stack([phantom.image] * data.in_channels)
        write_nifti(image, phantom.affine, folder / split / "images" / f"{phantom.name}.nii.gz", dtype=None)
        write_nifti(np.minimum(phantom.label, num_classes - 1), phantom.affine,
                    folder / split / "masks" / f"{phantom.name}.nii.gz")
    return folder


def _check_workflow(root: Path, kind: str, names: list[str], dataset_dir: str | Path | None, scratch: str) -> None:
    """Instantiate one workflow (without running its ``initialize``) and check its MONAI properties."""
    from monai.bundle import ConfigWorkflow

    configs = root / "configs"
    work = Path(tempfile.mkdtemp(dir=scratch))
    override: dict[str, Any] = {"bundle_root": str(root), "output_dir": str(work / "out")}
    if dataset_dir is not None:
        override["dataset_dir"] = str(dataset_dir)
    else:  # inference checked with no cases (training always gets data: see _probe_data)
        override["datalist"] = "$[]"
    if "multi_gpu_train.json" in names:  # checked without a process group: assemble the single-process engine
        override["distributed"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workflow = ConfigWorkflow(config_file=[str(configs / n) for n in names],
                                  meta_file=str(configs / "metadata.json"), logging_file=False,
                                  init_id="_no_initialize_", workflow_type=kind, **override)
        workflow.initialize()
        missing = workflow.check_properties()
    if missing:
        raise RuntimeError(f"{' + '.join(names)}: MONAI {kind} workflow properties missing or wrong: {missing}")


def _checked_source(cfg: Config, name: str | Path | None, output: Path,
                    checkpoint: str) -> tuple[BundleSource, list[str]]:
    """The bundle source (named, or described from ``cfg``), refused when the model breaks its contract;
    with the lines where the model's recipe differs from a named source's (warned here)."""
    source: BundleSource = load_bundle_source(name) if name is not None else generic_source(cfg, key=output.name)
    problems = contract_differences(cfg, source)
    if problems:
        raise InputError(f"{checkpoint} does not match bundle source {source.key}: " + "; ".join(problems)
                         + "; choose the bundle source the model was trained for (--name), or export without --name")
    differences = recipe_differences(cfg, source) if name is not None else []
    for line in differences:
        logger.warning("checkpoint differs from the recipe of %s: %s", source.key, line)
    return source, differences


def export_bundle(model: str | Path, output: str | Path, name: str | Path | None = None, onnx: bool = False,
                  zip_bundle_too: bool = False, summary: str | Path | None = None,
                  onnx_precisions: Sequence[str] = (), calibration_data: str | Path | None = None,
                  calibration_windows: int = 32) -> ExportResult:
    """Export a checkpoint as a MONAI bundle in ``output`` (see the module docstring for the layout).

    Args:
        model: a medt3d checkpoint (``best.pt``) or a training run folder.
        output: the bundle folder to create (must not exist, or be empty).
        name: a bundle source (``spleen_ct_medt3d``, ``phantom_demo_medt3d`` or a folder with a
            ``bundle.yaml``) for the hand-written parts; ``None`` describes the model from its config.
        onnx: also write ``models/model.onnx`` (checked with onnxruntime) and ``configs/inference_onnx.json``.
        onnx_precisions: also write ``models/model_fp16.onnx`` and/or ``models/model_int8.onnx``
            (:mod:`medt3d.bundle.onnx_precisions`; implies ``onnx``).
        calibration_data: the training data whose windows calibrate int8 (any layout ``medt3d train`` reads).
        calibration_windows: how many windows calibrate int8.
        zip_bundle_too: also write ``<output>.zip``.
        summary: the evaluation ``summary.json`` whose metrics the README reports; default: the one
            ``medt3d evaluate`` or ``medt3d demo`` left beside the run (if any).

    Returns:
        An :class:`ExportResult`.

    Raises:
        FileNotFoundError: no checkpoint, bundle source or summary there.
        ValueError: the checkpoint is unreadable, misses an entry, does not fit its config or the
            source's contract (the message says which keys/values), the output exists and is not
            empty, or the exported model fails a check. Nothing is left behind in that case.
    """
    output = Path(output)
    _check_output(output, zip_bundle_too)
    onnx = onnx or bool(onnx_precisions)
    if "int8" in onnx_precisions and calibration_data is None:
        raise InputError("--onnx-precision int8 is calibrated on training windows: pass the training data as "
                         "--calibration-data DIR")
    payload = load_checkpoint(model)  # weights_only=True
    network, cfg = model_from_checkpoint(payload)
    source, differences = _checked_source(cfg, name, output, payload["path"])
    summary_path = Path(summary) if summary is not None else find_summary(Path(payload["path"]))
    if summary is not None and not summary_path.is_file():
        raise FileNotFoundError(f"summary file not found: {summary_path}; check the --summary path")
    cfg = _deployable(cfg)
    facts = ModelFacts(
        cfg=cfg, parameters=sum(p.numel() for p in network.parameters()), epoch=int(payload.get("epoch", -1)),
        best_epoch=int(payload.get("best_epoch", -1)), val_metrics=payload.get("metrics") or {},
        summary=summary_from(summary_path) if summary_path else None, summary_path=summary_path,
        onnx=onnx, recipe_differences=differences,
    )

    with atomic_dir(output) as tmp:
        atomic_write_text(tmp / "LICENSE", source.license_text)
        _write_configs(tmp, cfg)
        metadata = build_metadata(source, facts)
        _write_json(tmp / "configs" / "metadata.json", metadata)
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        atomic_save(tmp / "models" / "model.pt", lambda p: torch.save(state, p))
        verify_bundle(tmp)
        facts.torchscript = _torchscript(tmp, cfg, network)
        facts.any_size = accepts_other_sizes(cfg, network)
        if onnx:
            export_onnx(network, tmp / "models" / "model.onnx", torch.zeros(1, cfg.data.in_channels, *cfg.patch.roi_size),
                        facts.any_size)
        _check_logits(tmp, cfg, network, onnx, facts.any_size)
        if onnx:
            _write_json(tmp / "configs" / "inference_onnx.json", inference_onnx_config())
        if onnx_precisions:
            facts.onnx_agreement = write_precisions(tmp, cfg, network, list(dict.fromkeys(onnx_precisions)),
                                                    calibration_data, calibration_windows)
        atomic_write_text(tmp / "docs" / "README.md", build_readme(source, facts, output.name))
    zip_path = zip_bundle(output) if zip_bundle_too else None
    logger.info("exported %s to %s (TorchScript by %s%s)%s", payload["path"], output, facts.torchscript,
                ", ONNX" if onnx else "", f"; zip {zip_path}" if zip_path else "")
    return ExportResult(bundle_dir=output, zip_path=zip_path, torchscript=facts.torchscript, onnx=onnx,
                        onnx_agreement=facts.onnx_agreement,
                        summary_path=summary_path, metadata=metadata)
