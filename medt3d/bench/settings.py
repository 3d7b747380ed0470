"""Defaults of the benchmarks, in plain Python so that ``medt3d bench --help`` shows them without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from medt3d.networks.registry import BENCH_NAMES

__all__ = ["DEFAULT_BUDGET_S", "DEFAULT_CONFIG", "DEFAULT_DIR", "DEFAULT_NETWORKS", "INFER_VOLUMES",
           "NETWORK_CHOICES", "NetworkBenchSettings"]

#: Networks the ``networks`` mode can measure: every MedT3D preset and the MONAI baselines.
NETWORK_CHOICES = BENCH_NAMES


@dataclass
class NetworkBenchSettings:
    """What the ``networks`` mode measures; the defaults are the sizes of docs/benchmarks.md.

    Sliding-window overlap, blending and window batch come from ``cfg.infer`` (one source of
    truth for them); ``cfg.data`` gives the input channels and classes.

    Attributes:
        networks: names from :data:`NETWORK_CHOICES`.
        patch: edge of the cubic patch for forward/backward timing and memory (also the ROI).
        volume: size of the volume for sliding-window inference.
        repeats: timed runs after one warm-up; the median is reported.
        memory_sizes: patch edges at which MedT3D's inference and attention memory are measured.
        sliding_window: measure sliding-window inference (the slowest part).
        threads: torch threads; ``None`` keeps torch's default.
    """

    networks: tuple[str, ...] = NETWORK_CHOICES
    patch: int = 64
    volume: tuple[int, int, int] = (160, 160, 96)
    repeats: int = 3
    memory_sizes: tuple[int, ...] = (64, 96, 128)
    sliding_window: bool = True
    threads: int | None = None


#: Default folder of ``medt3d bench --infer`` (scans are written once and reused).
DEFAULT_DIR = "bench_infer"

#: Volumes timed by ``medt3d bench --infer``: name -> (size in voxels, spacing in mm it is made with).
#: The small one is already on ct_abdomen's 1.5x1.5x2 mm grid; the large one is a clinical-like CT
#: (0.8 mm in-plane, 1.5 mm slices) that inference resamples to the model's grid and back.
INFER_VOLUMES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "160x160x96": ((160, 160, 96), (1.5, 1.5, 2.0)),
    "512x512x300": ((512, 512, 300), (0.8, 0.8, 1.5)),
}


#: ``--quality``: training seconds per network and run, the networks compared, and the config they share.
DEFAULT_BUDGET_S = 600.0
DEFAULT_NETWORKS = ("medt3d", "unet")
DEFAULT_CONFIG = "ct_abdomen"
