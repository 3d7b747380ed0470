"""Knowledge distillation through the training engine's seam: a student learns from a trained teacher.

The student is an ordinary medt3d run (its config, checkpoints, validation, tracking, resume); only the
:class:`~medt3d.training.objective.TrainingObjective` differs. The teacher (a run, checkpoint or bundle,
loaded by :func:`medt3d.models.loading.load_model`) runs in eval mode under ``torch.no_grad`` on exactly
the student's input patch (with the patch's valid mask when it is a MedT3D); the loss is Hinton's

    alpha * supervised(student, label) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

per voxel of scan (padding is left out of the KL term, as of the supervised one). A training case without a
label (allowed here, unlike ``medt3d train``) gets the teacher's term only: ``(1 - alpha)`` times the KL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medt3d.config import Config, config_to_dict
from medt3d.data.transforms import LABELLED
from medt3d.errors import InputError
from medt3d.models.loading import load_model
from medt3d.networks.factory import masks_padding
from medt3d.training.batches import patch_batch
from medt3d.training.distill_defaults import DEFAULT_ALPHA, DEFAULT_TEMPERATURE
from medt3d.training.losses import PADDING_LABEL, IgnorePadding, build_loss
from medt3d.training.objective import TrainingObjective

__all__ = ["DistillationLoss", "DistillationObjective", "check_teacher", "distill"]

logger = logging.getLogger("medt3d.train")


class DistillationLoss(torch.nn.Module):
    """Student logits against the teacher's (set in ``teacher_logits`` before each call) and the labels.

    ``alpha`` weights the supervised loss, ``1 - alpha`` the temperature-scaled KL term (times ``T^2`` so
    its gradients keep their scale as ``T`` changes). With ``alpha = 0`` the labels are never used. The
    samples of the batch whose case has no label (``labelled``, set with the teacher's logits: False) are left
    out of the supervised term; a batch of only such samples gives ``(1 - alpha)`` times the teacher's term.
    """

    def __init__(self, supervised: torch.nn.Module, num_classes: int, temperature: float, alpha: float) -> None:
        super().__init__()
        self.supervised = supervised
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.teacher_logits: torch.Tensor | None = None
        self.labelled: torch.Tensor | None = None
        self.last: dict[str, float] = {}

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.teacher_logits is None:
            raise RuntimeError("DistillationLoss called without the teacher's logits (prepare_batch sets them)")
        t = self.temperature
        student = pred[:, : self.num_classes].float()  # the main head (deep supervision adds heads after it)
        kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(self.teacher_logits.float() / t, dim=1),
                      reduction="none", log_target=True).sum(dim=1, keepdim=True)
        scan = (label != PADDING_LABEL).to(kl.dtype) if label is not None else torch.ones_like(kl)
        teacher_term = (kl * scan).sum() / scan.sum().clamp_min(1.0) * t * t
        self.last = {"loss_teacher": float(teacher_term.detach())}
        labelled = self.labelled  # None: every sample has its label
        if self.alpha == 0.0 or label is None or (labelled is not None and not bool(labelled.any())):
            return (1.0 - self.alpha) * teacher_term
        if labelled is not None and not bool(labelled.all()):
            pred, label = pred[labelled], label[labelled]
        supervised = self.supervised(pred, label)
        self.last["loss_labels"] = float(supervised.detach())
        return self.alpha * supervised + (1.0 - self.alpha) * teacher_term


class DistillationObjective(TrainingObjective):
    """The student's step: the teacher's logits on the same patch, then :class:`DistillationLoss`."""

    name = "distillation"

    def __init__(self, cfg: Config, teacher: torch.nn.Module, teacher_cfg: Config,
                 temperature: float = DEFAULT_TEMPERATURE, alpha: float = DEFAULT_ALPHA) -> None:
        if not temperature > 0:
            raise InputError(f"--temperature {temperature}: must be positive; pass e.g. --temperature {DEFAULT_TEMPERATURE}")
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"--alpha {alpha}: must be between 0 (teacher only) and 1 (labels only); pass a value in "
                             f"[0, 1], e.g. --alpha {DEFAULT_ALPHA}")
        self.teacher = teacher.eval()
        self.student_masks = masks_padding(cfg)
        self.teacher_masks = masks_padding(teacher_cfg)
        self.loss_function = DistillationLoss(IgnorePadding(build_loss(cfg)), cfg.data.num_classes,
                                              temperature, alpha)
        self.accepts_unlabelled = alpha < 1.0  # a case without a label learns the teacher's term (none at alpha 1)

    def to(self, device: torch.device) -> DistillationObjective:
        """Move the teacher and the loss to ``device``."""
        self.teacher = self.teacher.to(device).eval()
        self.loss_function = self.loss_function.to(device)
        return self

    def prepare_batch(self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False,
                      **kwargs: Any) -> tuple[Any, ...]:
        """The student's patch batch; the teacher's logits on that very patch go to the loss."""
        image, label, *rest = patch_batch(batchdata, device, non_blocking, masked=True, **kwargs)
        extra = rest[1] if rest else {}  # {"valid": ...} where the patch has padding
        with torch.no_grad():
            self.teacher.eval()
            logits = self.teacher(image, **(extra if self.teacher_masks else {}))
        self.loss_function.teacher_logits = logits.detach()
        flags = batchdata.get(LABELLED)  # absent from a cache written before the flag existed: all labelled
        self.loss_function.labelled = None if flags is None else torch.as_tensor(flags).to(image.device).bool()
        if rest and self.student_masks:
            return image, label, (), extra
        return image, label

    def terms(self) -> dict[str, float]:
        """The last step's teacher (KL) term and, with labels weighted in, its supervised term."""
        return dict(self.loss_function.last)


def check_teacher(cfg: Config, teacher_cfg: Config, teacher_source: str) -> None:
    """Refuse a teacher whose classes, channels or preprocessing differ from the student's config.

    The teacher sees the student's patches, so they must be made as the teacher's training made its own.
    """
    student, teacher = config_to_dict(cfg), config_to_dict(teacher_cfg)
    keys = [("data", "labels"), ("data", "in_channels")] + [("preprocess", k) for k in teacher["preprocess"]]
    differ = [f"{s}.{k}={teacher[s].get(k)!r} (student {student[s].get(k)!r})" for s, k in keys
              if student[s].get(k) != teacher[s].get(k)]
    if differ:
        raise InputError(f"teacher {teacher_source}: its config differs from the student's in "
                         f"{'; '.join(differ)}; the teacher must see data prepared as it was trained: set those "
                         "keys on the student with --set")


def distill(cfg: Config, teacher: str | Path, data_dir: str | Path, output: str | Path,
            temperature: float = DEFAULT_TEMPERATURE, alpha: float = DEFAULT_ALPHA, resume: bool = False,
            tracking_uri: str | None = None, overwrite: bool = False, overrides: Sequence[str] = ()) -> Any:
    """Train the student ``cfg`` on ``data_dir`` from ``teacher``'s soft labels (and the labels, by ``alpha``).

    Args:
        cfg: the student's resolved config.
        teacher: a run folder, checkpoint or exported bundle (folder or zip).
        data_dir, output, resume, tracking_uri, overwrite, overrides: as for
            :func:`medt3d.training.engine.train`.
        temperature: the softmax temperature of both networks' logits in the KL term.
        alpha: the weight of the supervised loss; ``1 - alpha`` goes to the teacher's term.

    Returns:
        The :class:`~medt3d.training.engine.TrainResult` of the student's run.
    """
    from medt3d.training.engine import build_training

    teacher_net, teacher_cfg = load_model(teacher)
    if resume:  # the run's own config decides; check the teacher against it inside the engine's resume
        from medt3d.config import apply_overrides, config_from_dict
        from medt3d.models.checkpoint import load_checkpoint
        from medt3d.models.layout import RunLayout

        payload = load_checkpoint(RunLayout(Path(output)).last)
        cfg = config_from_dict(apply_overrides(payload["config"], overrides), source=str(payload["path"]))
    check_teacher(cfg, teacher_cfg, str(teacher))
    objective = DistillationObjective(cfg, teacher_net, teacher_cfg, temperature, alpha)
    logger.info("distilling %s into the student (T=%s, alpha=%s)", teacher, temperature, alpha)
    return build_training(cfg, data_dir, output, resume=resume, tracking_uri=tracking_uri, overwrite=overwrite,
                          overrides=overrides, objective=objective).run()
