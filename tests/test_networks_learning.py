"""The tiny preset learns the project's phantom segmentation (a short CPU training, one thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from medt3d.config import CT_WINDOWS
from medt3d.data.phantoms import CLASS_NAMES, make_phantom
from medt3d.networks import MedT3D

ROI = 32


@pytest.fixture(scope="module")
def phantoms() -> list[tuple[torch.Tensor, torch.Tensor]]:
    width, level = CT_WINDOWS["abdomen"]
    cases = []
    for index in range(8):
        ph = make_phantom(index, shape=(48, 48, 32))
        image = np.clip((ph.image - (level - width / 2)) / width, 0.0, 1.0).astype(np.float32)
        cases.append((torch.from_numpy(image), torch.from_numpy(ph.label.astype(np.int64))))
    return cases


def _train_and_score(cases, steps: int) -> np.ndarray:
    """Train MedT3D-tiny on random ROI crops of cases 0-5; mean Dice per organ on whole cases 6-7."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine runs one thread far more steadily
    try:
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        net = MedT3D.from_preset("tiny", in_channels=1, out_channels=len(CLASS_NAMES))
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        for _ in range(steps):
            xs, ys = [], []
            for _ in range(2):
                image, label = cases[int(torch.randint(0, 6, (), generator=gen))]
                o = [int(torch.randint(0, d - ROI + 1, (), generator=gen)) for d in image.shape]
                window = (slice(o[0], o[0] + ROI), slice(o[1], o[1] + ROI), slice(o[2], o[2] + ROI))
                xs.append(image[window][None])
                ys.append(label[window][None])
            loss = loss_fn(net(torch.stack(xs)), torch.stack(ys))
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        dice = []
        for image, label in cases[6:]:
            with torch.no_grad():
                pred = net(image[None, None]).argmax(1)[0]  # whole 48x48x32 case, larger than the ROI
            dice.append([
                2 * ((pred == c) & (label == c)).sum().item() / max(1, (pred == c).sum().item() + (label == c).sum().item())
                for c in range(1, len(CLASS_NAMES))
            ])
        return np.mean(dice, axis=0)
    finally:
        torch.set_num_threads(threads)


def test_tiny_learns_the_large_organ_quickly(phantoms) -> None:
    dice = _train_and_score(phantoms, steps=150)
    assert dice[0] > 0.6, f"organ_a Dice {dice[0]:.3f} after 150 steps"


@pytest.mark.slow
def test_tiny_learns_every_organ(phantoms) -> None:
    dice = _train_and_score(phantoms, steps=400)
    assert (dice > 0.6).all(), f"Dice per organ {np.round(dice, 3)} after 400 steps"
