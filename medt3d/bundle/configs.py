"""The configs of an exported MONAI bundle: inference, evaluate, train, multi-GPU train, logging.

They use the key names of the MONAI model zoo (``bundle_root``, ``device``, ``dataset_dir``,
``output_dir``, ``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``, ``dataset``,
``evaluator``, ``train#trainer``, ``train#dataset#data``, ``train#handlers``, ``validate#evaluator``,
``val_interval``) and build every component with medt3d's own functions from the bundle's
``configs/medt3d.yaml`` (the resolved config of the checkpoint): the transforms, network, loss,
optimiser, schedule and inferer come from the same code as ``medt3d train`` and ``medt3d infer``,
so the bundle cannot drift from them. No medt3d setting is repeated here as a literal: the
configs read them from ``@medt3d_cfg`` when the bundle runs.
"""

from __future__ import annotations

from typing import Any

from medt3d.models.layout import BUNDLE_CONFIG as MEDT3D_CONFIG

__all__ = [
    "CONFIG_FILES",
    "MEDT3D_CONFIG",
    "evaluate_config",
    "inference_config",
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
    "$import medt3d.data.io",
    "$import medt3d.data.transforms",
    "$import medt3d.devices",
    "$import medt3d.inference.predictor",
    "$import medt3d.training.losses",
    "$import medt3d.networks",
    "$import medt3d.training.optim",
    "$import medt3d.training.engine",
]

_NUM_CLASSES = "$@medt3d_cfg.data.num_classes"
_DICE_INPUTS = "$monai.handlers.from_engine(['pred', 'label'])"
_LOSS_OUTPUT = "$monai.handlers.from_engine(['loss'], first=True)"
_SET_EARLY_STOP = "$@validate#handlers#0 is None or @validate#handlers#0.set_trainer(@train#trainer)"


def _common(device_key: str) -> dict[str, Any]:
    """Entries shared by the inference and training configs."""
    return {
        "imports": list(_IMPORTS),
        "bundle_root": ".",
        "medt3d_cfg": f"$medt3d.config.load_config(os.path.join(@bundle_root, '{MEDT3D_CONFIG}'))",
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
                {"_target_": "medt3d.data.io.LoadVolumed", "keys": "label"},
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


def train_config(key_metric: str) -> dict[str, Any]:
    """``configs/train.json``: train on ``dataset_dir`` like ``medt3d train`` (MONAI engines and handlers).

    Same data split and checks (:func:`medt3d.training.engine.prepare_datalist`), transforms, network,
    loss, optimiser, warm-up/cosine schedule, gradient clipping, gate freezing, early stopping and
    sliding-window validation as ``medt3d train`` (not its per-epoch reseeding for exact resumes); the best weights go to ``<output_dir>/models/model.pt`` (a
    state_dict, like the bundle's own). ``--tracking mlflow`` logs to the SQLite store
    ``tracking_uri`` (default ``<output_dir>/mlflow.db``).

    Args:
        key_metric: name of the validation metric (``medt3d.training.engine.KEY_METRIC``).
    """
    main_only = "$not @is_main_process"
    return {
        **_common("train"),
        "dataset_dir": "/workspace/data",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "ckpt_dir": "$os.path.join(@output_dir, 'models')",
        "is_main_process": "$not (torch.distributed.is_available() and torch.distributed.is_initialized() "
                           "and torch.distributed.get_rank() > 0)",
        "tracking_uri": "$@medt3d_cfg.tracking.mlflow_uri or "
                        "monai.utils.path_to_sqlite_uri(os.path.join(@output_dir, 'mlflow.db'))",
        "experiment_name": "$@medt3d_cfg.tracking.experiment",
        "val_interval": "$@medt3d_cfg.train.val_interval or @medt3d_cfg.train.max_epochs",
        "amp": "$@medt3d_cfg.train.amp and @device.type == 'cuda'",
        "datalist": "$medt3d.training.engine.prepare_datalist(@medt3d_cfg, @dataset_dir)",
        "loss": "$medt3d.training.losses.build_loss(@medt3d_cfg).to(@device)",
        "optimizer": "$medt3d.training.optim.build_optimizer(@medt3d_cfg, @network)",
        "train": {
            "preprocessing": "$medt3d.data.transforms.build_train_transforms(@medt3d_cfg)",
            "dataset": {
                "_target_": "medt3d.bundle.runtime.dataset",
                "data": "$@datalist.train",
                "transform": "@train#preprocessing",
                "cfg": "@medt3d_cfg",
                "cache_dir": "$os.path.join(@output_dir, 'cache', 'train')",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@train#dataset",
                "batch_size": "$@medt3d_cfg.train.batch_size",
                "shuffle": True,
                "num_workers": "$@medt3d_cfg.data.num_workers",
            },
            "iterations": "$@medt3d_cfg.train.iterations_per_epoch or len(@train#dataloader)",
            "inferer": {"_target_": "SimpleInferer"},
            "scheduler": "$medt3d.training.optim.build_scheduler(@medt3d_cfg, @optimizer, @train#iterations)",
            "handlers": [
                {"_target_": "LrScheduleHandler", "lr_scheduler": "@train#scheduler", "print_lr": False,
                 "epoch_level": False},
                {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "interval": "@val_interval",
                 "epoch_level": True},
                {"_target_": "medt3d.bundle.runtime.TrainExtrasHandler", "cfg": "@medt3d_cfg", "network": "@network"},
                {"_target_": "StatsHandler", "_disabled_": main_only, "tag_name": "train_loss",
                 "output_transform": _LOSS_OUTPUT},
                {"_target_": "TensorBoardStatsHandler",
                 "_disabled_": "$not (@is_main_process and @medt3d_cfg.tracking.tensorboard)",
                 "log_dir": "$os.path.join(@output_dir, 'tensorboard')", "tag_name": "train_loss",
                 "output_transform": _LOSS_OUTPUT},
            ],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "max_epochs": "$@medt3d_cfg.train.max_epochs",
                "device": "@device",
                "train_data_loader": "@train#dataloader",
                "epoch_length": "@train#iterations",
                "network": "@network",
                "loss_function": "@loss",
                "optimizer": "@optimizer",
                "inferer": "@train#inferer",
                "amp": "@amp",
                "train_handlers": "@train#handlers",
            },
        },
        "validate": {
            "preprocessing": "$medt3d.data.transforms.build_val_transforms(@medt3d_cfg)",
            "dataset": {
                "_target_": "medt3d.bundle.runtime.dataset",
                "data": "$@datalist.val",
                "transform": "@validate#preprocessing",
                "cfg": "@medt3d_cfg",
                "cache_dir": "$os.path.join(@output_dir, 'cache', 'val')",
            },
            "dataloader": {"_target_": "DataLoader", "dataset": "@validate#dataset", "batch_size": 1, "shuffle": False,
                           "num_workers": "$@medt3d_cfg.data.num_workers"},
            "inferer": "$medt3d.inference.inferer.build_sliding_window_inferer(@medt3d_cfg)",
            "postprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "AsDiscreted", "keys": "pred", "argmax": True, "to_onehot": _NUM_CLASSES},
                    {"_target_": "AsDiscreted", "keys": "label", "to_onehot": _NUM_CLASSES},
                ],
            },
            "key_metric": {
                key_metric: {"_target_": "MeanDice", "include_background": False, "output_transform": _DICE_INPUTS}
            },
            "handlers": [
                {   # validate#handlers#0: given the trainer in "run" (a reference here would be circular)
                    "_target_": "EarlyStopHandler",
                    "_disabled_": "$@medt3d_cfg.train.early_stopping_patience is None",
                    "patience": "$@medt3d_cfg.train.early_stopping_patience or 1",
                    "score_function": f"$lambda engine: engine.state.metrics['{key_metric}']",
                },
                {"_target_": "StatsHandler", "_disabled_": main_only, "iteration_log": False},
                {"_target_": "TensorBoardStatsHandler",
                 "_disabled_": "$not (@is_main_process and @medt3d_cfg.tracking.tensorboard)",
                 "log_dir": "$os.path.join(@output_dir, 'tensorboard')", "iteration_log": False},
                # on every rank: ignite writes the file on rank 0 only, and building it on rank 0 alone would
                # start ignite's distributed set-up (a collective) on that rank only and hang the others
                {"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir", "save_dict": {"model": "@network"},
                 "save_key_metric": True, "key_metric_filename": "model.pt"},
            ],
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@validate#dataloader",
                "network": "@network",
                "inferer": "@validate#inferer",
                "postprocessing": "@validate#postprocessing",
                "key_val_metric": "@validate#key_metric",
                "val_handlers": "@validate#handlers",
                "amp": "@amp",
            },
        },
        "initialize": ["$monai.utils.set_determinism(seed=@medt3d_cfg.train.seed)"],
        "run": [_SET_EARLY_STOP,
                "$@train#trainer.run()"],
    }


def multi_gpu_train_config() -> dict[str, Any]:
    """``configs/multi_gpu_train.json``, run on top of ``train.json`` under ``torchrun``.

    DistributedDataParallel with nccl on GPUs (one per process) or gloo on CPUs; each rank trains
    and validates on its share of the cases; only rank 0 logs and saves checkpoints.
    """
    return {
        "+imports": ["$import torch.distributed as dist"],
        "device": "$torch.device('cuda', int(os.environ['LOCAL_RANK'])) if torch.cuda.is_available() "
                  "else torch.device('cpu')",
        "network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": "$@network_def.to(@device)",
            "device_ids": "$[@device] if @device.type == 'cuda' else None",
        },
        "train#sampler": {"_target_": "DistributedSampler", "dataset": "@train#dataset", "even_divisible": True,
                          "shuffle": True},
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        # even shares, as medt3d train does (a rank may repeat a case when there are fewer cases than ranks)
        "validate#sampler": {"_target_": "DistributedSampler", "dataset": "@validate#dataset",
                             "even_divisible": True, "shuffle": False},
        "validate#dataloader#sampler": "@validate#sampler",
        "initialize": [
            "$dist.is_initialized() or dist.init_process_group(backend='nccl' if torch.cuda.is_available() "
            "else 'gloo')",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=@medt3d_cfg.train.seed)",
        ],
        "run": [_SET_EARLY_STOP,
                "$@train#trainer.run()"],
        "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
    }


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
