"""The configs of an exported MONAI bundle: inference, evaluate, train, multi-GPU train, logging.

They use the key names of the MONAI model zoo (``bundle_root``, ``device``, ``dataset_dir``,
``output_dir``, ``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``, ``dataset``,
``evaluator``, ``train#trainer``, ``train#dataset#data``, ``train#handlers``, ``validate#evaluator``,
``val_interval``) and build every component with medt3d's own functions from the bundle's
``configs/medt3d.yaml`` (the resolved config of the checkpoint): the transforms, network and
inferer come from the same code as ``medt3d infer``, and training runs the engine of ``medt3d train``
(:func:`medt3d.training.engine.build_training`), so the bundle cannot drift from them. No medt3d setting is repeated here as a literal: the
configs read them from ``@medt3d_cfg`` when the bundle runs.
"""

from __future__ import annotations

from typing import Any

from medt3d.models.layout import BUNDLE_CONFIG

__all__ = [
    "CONFIG_FILES",
    "evaluate_config",
    "inference_config",
    "inference_onnx_config",
    "logging_conf",
    "multi_gpu_train_config",
    "train_config",
]

#: Config files every bundle has, relative to the bundle root.
CONFIG_FILES = ("configs/inference.json", "configs/evaluate.json", "configs/train.json",
                "configs/multi_gpu_train.json", "configs/logging.conf")

_IMPORTS = [
    "$import glob",
    "$import os",
    "$import numpy",
    "$import torch",
    "$import monai",
    "$import medt3d",
    "$import medt3d.bundle.runtime",
    "$import medt3d.config",
    "$import medt3d.data.readers",
    "$import medt3d.data.readers.rtstruct",
    "$import medt3d.data.transforms",
    "$import medt3d.devices",
    "$import medt3d.inference.engines",
    "$import medt3d.inference.predictor",
    "$import medt3d.networks",
    "$import medt3d.training.engine",
]

_NUM_CLASSES = "$@medt3d_cfg.data.num_classes"
_DICE_INPUTS = "$monai.handlers.from_engine(['pred', 'label'])"


def _common(device_key: str) -> dict[str, Any]:
    """Entries shared by the inference and training configs."""
    return {
        "imports": list(_IMPORTS),
        "bundle_root": ".",
        "medt3d_cfg": f"$medt3d.config.load_config(os.path.join(@bundle_root, '{BUNDLE_CONFIG}'))",
        "device": f"$medt3d.devices.resolve_device(@medt3d_cfg.{device_key}.device)",
        "network_def": "$medt3d.networks.build_network(@medt3d_cfg)",
        "network": "$@network_def.to(@device)",
    }


def _label_postprocessing() -> list[Any]:
    """Prediction -> label map on the scan's own grid, exactly as ``medt3d infer`` makes it."""
    return [
        "$medt3d.data.transforms.build_postprocessing(@medt3d_cfg, @preprocessing, argmax=True)",
        {
            "_target_": "KeepLargestConnectedComponentd",
            "_disabled_": "$not @medt3d_cfg.infer.largest_component",
            "keys": "pred",
            "applied_labels": "$list(range(1, @medt3d_cfg.data.num_classes))",
            "independent": True,
        },
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "seg",
            "output_ext": ".nii.gz",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "writer": "$medt3d.bundle.runtime.AtomicNibabelWriter",
            "output_name_formatter": "$medt3d.bundle.runtime.case_name_formatter",
            "print_log": False,
        },
    ]


def _checkpoint_loader() -> dict[str, Any]:
    return {"_target_": "CheckpointLoader", "load_path": "@ckpt_path", "load_dict": {"model": "@network"},
            "map_location": "cpu"}


def inference_config() -> dict[str, Any]:
    """``configs/inference.json``: predict every scan under ``dataset_dir`` into ``output_dir``.

    Writes ``<case>_seg.nii.gz`` label maps on each scan's own grid, like ``medt3d infer``: the
    windows run through :class:`medt3d.bundle.runtime.PredictorInferer` (the Predictor of
    ``medt3d infer``) at ``precision`` (``fp32``, ``bf16`` or ``fp16``; default: the config's).
    """
    return {
        **_common("infer"),
        "ckpt_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "dataset_dir": "/workspace/data",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "precision": "$@medt3d_cfg.infer.precision",
        "datalist": "$medt3d.bundle.runtime.image_cases(@dataset_dir, @output_dir)",
        "preprocessing": "$medt3d.bundle.runtime.infer_transforms(@medt3d_cfg)",
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": "$@medt3d_cfg.data.num_workers"},
        "inferer": {"_target_": "medt3d.bundle.runtime.PredictorInferer", "cfg": "@medt3d_cfg", "device": "@device",
                    "precision": "@precision"},
        "postprocessing": {"_target_": "Compose", "transforms": _label_postprocessing()},
        "handlers": [_checkpoint_loader(), {"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "run": ["$@evaluator.run()"],
    }


def inference_onnx_config() -> dict[str, Any]:
    """``configs/inference_onnx.json``, run on top of ``inference.json`` (and ``evaluate.json``): the network on ONNX Runtime.

    The windows run ``models/model.onnx`` (``onnx_precision`` ``fp32``), ``model_fp16.onnx`` (``fp16``, GPU) or
    ``model_int8.onnx`` (``int8``) in onnxruntime (:class:`medt3d.inference.engines.OnnxNetwork`) instead of
    the torch network; everything else is ``inference.json``'s. The checkpoint loader (the first handler of
    both configs) is switched off: the ONNX file holds the weights. Written only with ``medt3d export --onnx``.
    """
    return {
        "onnx_precision": "fp32",
        "network": "$medt3d.inference.engines.bundle_onnx_network(@bundle_root, @onnx_precision, @device)",
        "handlers#0#_disabled_": True,
    }


def evaluate_config() -> dict[str, Any]:
    """``configs/evaluate.json``, run on top of ``inference.json``: Dice against labels on each scan's own grid.

    ``python -m monai.bundle run --config_file "['configs/inference.json','configs/evaluate.json']"``
    reads image/label pairs from ``dataset_dir`` (any layout medt3d reads), writes the predictions,
    ``metrics.csv`` and ``mean_dice_raw.csv`` to ``output_dir``.
    """
    return {
        "datalist": "$medt3d.bundle.runtime.labelled_cases(@dataset_dir)",
        "load_label": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "medt3d.data.readers.LoadVolumed", "keys": "label",  # an RTSTRUCT label's ROIs too
                 "rois": "$medt3d.data.readers.rtstruct.RoiMap.from_config(@medt3d_cfg.data)"},
                {"_target_": "medt3d.data.transforms.CheckLabelValuesd", "keys": "label", "num_classes": _NUM_CLASSES},
            ],
        },
        "dataset#transform": "$monai.transforms.Compose([@preprocessing, @load_label])",
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [*_label_postprocessing(),
                           {"_target_": "AsDiscreted", "keys": ["pred", "label"], "to_onehot": _NUM_CLASSES}],
        },
        "key_metric": {
            "mean_dice": {"_target_": "MeanDice", "include_background": False, "output_transform": _DICE_INPUTS}
        },
        "handlers": [
            _checkpoint_loader(),
            {"_target_": "StatsHandler", "iteration_log": False},
            {
                "_target_": "MetricsSaver",
                "save_dir": "@output_dir",
                "metrics": ["mean_dice"],
                "metric_details": ["mean_dice"],
                "batch_transform": "$lambda x: [xx['image'].meta for xx in x]",
                "summary_ops": "*",
            },
        ],
        "evaluator#key_val_metric": "@key_metric",
    }


def train_config() -> dict[str, Any]:
    """``configs/train.json``: train on ``dataset_dir`` with the engine of ``medt3d train``.

    ``train#trainer`` is :func:`medt3d.training.engine.build_training`, the builder ``medt3d train``
    runs: the same data checks and split, transforms, network, loss, optimiser, schedule, gradient
    clipping, gate freezing, per-epoch reseeding, validation and early stopping. ``output_dir``
    becomes a medt3d run folder with resumable ``checkpoints/last.pt`` and ``checkpoints/best.pt``;
    ``--resume true`` continues from its ``last.pt`` (with the run's config, ``medt3d_overrides`` and
    the epochs on top); ``--overwrite true`` replaces a run already there, which is refused otherwise.
    ``--train#trainer#max_epochs N`` sets the epochs;
    ``medt3d_overrides`` takes any other ``section.key=value`` setting (``"['train.lr=0.0005']"``),
    checked like ``--set``. Handlers in ``train#handlers`` or ``validate#handlers`` (as added by
    ``--tracking mlflow``, which logs to the SQLite store ``tracking_uri``) are attached on top of
    medt3d's own.
    """
    return {
        "imports": list(_IMPORTS),
        "bundle_root": ".",
        "medt3d_overrides": [],
        "medt3d_cfg": f"$medt3d.config.load_config(os.path.join(@bundle_root, '{BUNDLE_CONFIG}'), "
                      "@medt3d_overrides)",
        "device": "$medt3d.devices.resolve_device(@medt3d_cfg.train.device)",
        "dataset_dir": "/workspace/data",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "resume": False,
        "overwrite": False,
        "distributed": None,
        "tracking_uri": "$@medt3d_cfg.tracking.mlflow_uri or "
                        "monai.utils.path_to_sqlite_uri(os.path.join(@output_dir, 'mlflow.db'))",
        "experiment_name": "$@medt3d_cfg.tracking.experiment",
        "train": {
            "handlers": [],
            "inferer": {"_target_": "SimpleInferer"},
            "trainer": {
                "_target_": "medt3d.training.engine.build_training",
                "cfg": "@medt3d_cfg",
                "data_dir": "@dataset_dir",
                "output": "@output_dir",
                "max_epochs": "$@medt3d_cfg.train.max_epochs",
                "resume": "@resume",
                "overwrite": "@overwrite",
                "overrides": "@medt3d_overrides",
                "device": "@device",
                "inferer": "@train#inferer",
                "tracking_uri": "@tracking_uri",
                "train_handlers": "@train#handlers",
                "val_handlers": "@validate#handlers",
                "distributed": "@distributed",
            },
            "dataset": "$@train#trainer.train_dataset",
        },
        "validate": {"handlers": [], "evaluator": "$@train#trainer.evaluator"},
        "run": ["$@train#trainer.run()"],
    }


def multi_gpu_train_config() -> dict[str, Any]:
    """``configs/multi_gpu_train.json``, run on top of ``train.json`` under ``torchrun``.

    The engine of ``medt3d train`` joins the torchrun group: DistributedDataParallel with nccl on
    GPUs (one per process) or gloo on CPUs, each rank on its share of the cases, only rank 0 logging
    and saving checkpoints. Started without torchrun it stops with an error instead of training alone.
    """
    return {"distributed": True}


def logging_conf() -> str:
    """``configs/logging.conf`` for Python's ``logging.config.fileConfig`` (MONAI reads it when the bundle runs)."""
    return "\n".join([
        "[loggers]", "keys=root", "",
        "[handlers]", "keys=consoleHandler", "",
        "[formatters]", "keys=fullFormatter", "",
        "[logger_root]", "level=INFO", "handlers=consoleHandler", "",
        "[handler_consoleHandler]", "class=StreamHandler", "level=INFO", "formatter=fullFormatter",
        "args=(sys.stdout,)", "",
        "[formatter_fullFormatter]", "format=%(asctime)s - %(name)s - %(levelname)s - %(message)s", "",
    ])
