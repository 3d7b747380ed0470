"""Benchmarks that print JSON: ``medt3d bench``.

Each mode is one function here that returns a JSON-ready dict (``bench_networks`` for
``--networks``); ``medt3d/commands/bench.py`` maps each mode flag to its function, so a new
mode is one function here and one entry there. Progress goes to the ``log`` callable (stderr
on the command line), results to stdout.

Mode ``networks`` measures MedT3D (every preset) and the MONAI baselines in one process, on
the same machine and under the same conditions: parameters, forward and forward+backward
time on one patch, peak memory, sliding-window throughput on a whole volume, and for MedT3D
how inference and attention memory grow with the patch size.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from medt3d.bench.settings import NETWORK_CHOICES, NetworkBenchSettings
from medt3d.config import Config, config_from_dict
from medt3d.errors import InputError

__all__ = [
    "NETWORK_CHOICES", "NetworkBenchSettings", "PeakMemory", "attention_peaks", "attention_seconds", "bench_networks",
    "network_config", "networks_markdown",
]


Log = Callable[[str], None]

#: Sliding-window runs are repeated (median) only while all repeats fit in this many seconds.
SW_REPEAT_BUDGET_S = 90.0


# --------------------------------------------------------------------------- peak memory


class PeakMemory:
    """Peak resident memory (RSS) of this process over a block of code, on Linux.

    PyTorch has no peak-memory counter for CPU tensors, so the process's high-water mark
    (``VmHWM``) is reset through ``/proc/self/clear_refs`` before the block and read after
    it. glibc is told to give memory back at once (allocations of 16 KiB or more are mapped
    and unmapped, the heap top is trimmed), so the RSS follows the live tensors. This slows
    allocation a little: measure time before calling :meth:`enable`.
    """

    _M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

    def __init__(self) -> None:
        self.available = os.path.exists("/proc/self/clear_refs") and os.path.exists("/proc/self/status")
        self._libc = None
        if self.available:
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None

    def enable(self) -> None:
        """Make the RSS follow live allocations (process-wide, for the rest of the run)."""
        if self._libc is not None:
            self._libc.mallopt(self._M_MMAP_THRESHOLD, 16 * 1024)
            self._libc.mallopt(self._M_TRIM_THRESHOLD, 0)

    def disable(self) -> None:
        """Back to glibc's default thresholds (128 KiB)."""
        if self._libc is not None:
            self._libc.mallopt(self._M_MMAP_THRESHOLD, 128 * 1024)
            self._libc.mallopt(self._M_TRIM_THRESHOLD, 128 * 1024)

    @staticmethod
    def _status_kib(key: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"/proc/self/status has no {key}")

    def start(self) -> int:
        """Reset the high-water mark; return the current RSS in KiB."""
        gc.collect()
        if self._libc is not None:
            self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return self._status_kib("VmRSS")

    def peak_mib(self, start_kib: int) -> float:
        """Peak RSS above ``start_kib`` since :meth:`start`, in MiB."""
        return max(0, self._status_kib("VmHWM") - start_kib) / 1024.0

    @contextmanager
    def measure(self) -> Iterator[dict[str, float | None]]:
        """``with peak.measure() as m: ...`` then ``m["mib"]`` is the block's peak (None if unavailable)."""
        result: dict[str, float | None] = {"mib": None}
        if not self.available:
            yield result
            return
        base = self.start()
        yield result
        result["mib"] = round(self.peak_mib(base), 1)


@contextmanager
def _around_attention(model: nn.Module, before: Callable[[nn.Module], None],
                      after: Callable[[nn.Module], None]) -> Iterator[None]:
    """Call ``before(module)`` and ``after(module)`` around every GatedAxialAttention call inside the block."""
    from medt3d.networks import GatedAxialAttention

    handles = []
    for module in model.modules():
        if isinstance(module, GatedAxialAttention):
            handles.append(module.register_forward_pre_hook(lambda m, args: before(m)))
            handles.append(module.register_forward_hook(lambda m, args, out: after(m)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def attention_peaks(model: nn.Module, peak: PeakMemory) -> Iterator[list[float]]:
    """Record the peak memory of every GatedAxialAttention call inside the block (MiB each)."""
    peaks: list[float] = []

    def before(module: nn.Module) -> None:
        module._bench_base = peak.start()

    def after(module: nn.Module) -> None:
        peaks.append(peak.peak_mib(module._bench_base))

    with _around_attention(model, before, after):
        yield peaks


@contextmanager
def attention_seconds(model: nn.Module) -> Iterator[list[float]]:
    """Record the wall-clock seconds of every GatedAxialAttention call inside the block."""
    seconds: list[float] = []
    started: dict[int, float] = {}

    def before(module: nn.Module) -> None:
        started[id(module)] = time.perf_counter()

    def after(module: nn.Module) -> None:
        seconds.append(time.perf_counter() - started[id(module)])

    with _around_attention(model, before, after):
        yield seconds


# --------------------------------------------------------------------------- helpers


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall-clock seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def network_config(name: str, cfg: Config, patch: int) -> Config:
    """``cfg`` with ``network.name``/``preset`` set for a bench name and the ROI set to ``patch``."""
    if name not in NETWORK_CHOICES:
        raise InputError(f"unknown network {name!r} for the benchmark; choose from {list(NETWORK_CHOICES)}")
    from medt3d.config import config_to_dict

    values = config_to_dict(cfg)
    if name.startswith("medt3d-"):
        values["network"].update(name="medt3d", preset=name.split("-", 1)[1])
    else:
        values["network"]["name"] = name
    values["patch"]["roi_size"] = [patch, patch, patch]
    return config_from_dict(values, source=f"benchmark config for {name}")


def _environment() -> dict[str, Any]:
    import monai

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
    }


def _forward_backward(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).float().mean().backward()


# --------------------------------------------------------------------------- networks mode


def bench_networks(cfg: Config | None = None, settings: NetworkBenchSettings | None = None,
                   log: Log | None = None) -> dict[str, Any]:
    """Measure every network of ``settings.networks`` in this process; a JSON-ready dict.

    Timings first (all networks, rounds interleaved so that a busy machine slows them alike),
    then memory, which needs a different allocator setting (see :class:`PeakMemory`).

    Args:
        cfg: config for ``data`` (channels, classes) and ``infer`` (sliding-window settings);
            defaults when None.
        settings: sizes and networks; :class:`NetworkBenchSettings` defaults when None.
        log: progress callback (one line per step).
    """
    cfg = cfg or config_from_dict({})
    s = settings or NetworkBenchSettings()
    log = log or (lambda _msg: None)
    unknown = [n for n in s.networks if n not in NETWORK_CHOICES]
    if unknown or not s.networks:
        raise InputError(f"unknown or no networks {unknown or list(s.networks)}; choose from {list(NETWORK_CHOICES)}")
    if s.repeats < 1:
        raise InputError(f"repeats must be >= 1, got {s.repeats}; pass a positive count")
    if s.patch < 16 or any(v < 1 for v in s.volume) or any(m < 16 for m in s.memory_sizes):
        raise InputError(f"patch and memory sizes must be >= 16 and the volume positive, got patch={s.patch}, "
                         f"volume={list(s.volume)}, memory_sizes={list(s.memory_sizes)}; pass such sizes")
    threads = torch.get_num_threads()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        return _bench_networks(cfg, s, log)
    finally:
        torch.set_num_threads(threads)


def _bench_networks(cfg: Config, s: NetworkBenchSettings, log: Log) -> dict[str, Any]:
    from medt3d.networks import build_network

    torch.manual_seed(cfg.train.seed)
    env = _environment()
    in_ch = cfg.data.in_channels
    patch = torch.randn(1, in_ch, s.patch, s.patch, s.patch)

    models: dict[str, nn.Module] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in s.networks:
        log(f"building {name}")
        models[name] = build_network(network_config(name, cfg, s.patch))
        results[name] = {"params": sum(p.numel() for p in models[name].parameters())}
    _time_patch(models, patch, s, results, log)
    if s.sliding_window:
        _time_sliding_window(models, cfg, s, results, log)

    # memory: allocator switched to give memory back at once (after all timings)
    peak = PeakMemory()
    if peak.available:
        peak.enable()
        try:
            _measure_memory(models, patch, s, in_ch, peak, results, log)
        finally:
            peak.disable()
    else:
        log("peak memory: /proc/self/clear_refs is not available here; memory is not measured")

    env["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return _networks_report(cfg, s, env, results)


def _time_patch(models: dict[str, nn.Module], patch: torch.Tensor, s: NetworkBenchSettings,
                results: dict[str, dict[str, Any]], log: Log) -> None:
    """Forward and forward+backward on one patch: one warm-up each, then ``repeats`` rounds over all networks."""
    fwd: dict[str, list[tuple[float, float]]] = {n: [] for n in models}
    fwb: dict[str, list[tuple[float, float]]] = {n: [] for n in models}
    for name, model in models.items():
        log(f"warm-up {name}")
        with torch.no_grad():
            model.eval()(patch)
        _forward_backward(model.train(), patch)
    for r in range(s.repeats):
        for name, model in models.items():
            log(f"timing {name}: round {r + 1}/{s.repeats}")
            with torch.no_grad():
                model.eval()
                fwd[name].append(_timed(lambda m=model: m(patch)))
            model.train()
            fwb[name].append(_timed(lambda m=model: _forward_backward(m, patch)))
    for name in models:
        for key, runs in (("forward", fwd[name]), ("forward_backward", fwb[name])):
            results[name][f"{key}_s"] = round(statistics.median(w for w, _ in runs), 4)
            results[name][f"{key}_cpu_s"] = round(statistics.median(c for _, c in runs), 4)


def _time_sliding_window(models: dict[str, nn.Module], cfg: Config, s: NetworkBenchSettings,
                         results: dict[str, dict[str, Any]], log: Log) -> None:
    """Sliding-window inference over a random volume, repeated while the repeats fit the time budget."""
    from monai.inferers import sliding_window_inference

    volume = torch.randn(1, cfg.data.in_channels, *s.volume)
    voxels = volume[0, 0].numel()
    for name, model in models.items():
        log(f"sliding window {name} on {list(s.volume)}")
        model.eval()
        runs: list[tuple[float, float]] = []
        shapes: list[tuple[int, ...]] = []

        def infer(m: nn.Module = model, shapes: list[tuple[int, ...]] = shapes) -> None:
            with torch.no_grad():
                out = sliding_window_inference(
                    volume, (s.patch,) * 3, cfg.infer.sw_batch_size, m,
                    overlap=cfg.infer.overlap, mode=cfg.infer.mode,
                )
            shapes.append(tuple(out.shape))

        # repeat (median) while the repeats fit in SW_REPEAT_BUDGET_S; the slow baselines run once
        while len(runs) < s.repeats and (not runs or runs[0][0] * s.repeats <= SW_REPEAT_BUDGET_S):
            runs.append(_timed(infer))
        if shapes[0] != (1, cfg.data.num_classes, *s.volume):
            raise RuntimeError(f"{name}: sliding-window output {shapes[0]} has the wrong shape")
        seconds = statistics.median(w for w, _ in runs)
        results[name]["sliding_window_s"] = round(seconds, 3)
        results[name]["sliding_window_cpu_s"] = round(statistics.median(c for _, c in runs), 3)
        results[name]["sliding_window_runs"] = len(runs)
        results[name]["sliding_window_mvox_s"] = round(voxels / seconds / 1e6, 4)


def _networks_report(cfg: Config, s: NetworkBenchSettings, env: dict[str, Any],
                     results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The benchmark's JSON: environment, settings, per-network figures and the targets they meet."""
    return {
        "mode": "networks",
        "environment": env,
        "settings": {
            "patch": [s.patch] * 3,
            "volume": list(s.volume),
            "roi": [s.patch] * 3,
            "sw_batch_size": cfg.infer.sw_batch_size,
            "overlap": cfg.infer.overlap,
            "blend": cfg.infer.mode,
            "repeats": s.repeats,
            "in_channels": cfg.data.in_channels,
            "classes": cfg.data.num_classes,
            "logo": cfg.network.logo,
            "timing": "wall clock (and process CPU time, *_cpu_s), median of the repeats after one warm-up; "
                      "rounds interleaved over networks",
            "memory": "peak RSS above the start of the block (VmHWM), MiB",
        },
        "networks": results,
        "targets": _targets(results),
    }


def _measure_memory(models: dict[str, nn.Module], patch: torch.Tensor, s: NetworkBenchSettings, in_ch: int,
                    peak: PeakMemory, results: dict[str, dict[str, Any]], log: Log) -> None:
    """Training and inference peak on the patch; for MedT3D also the growth with the patch size."""
    for name, model in models.items():
        log(f"memory {name}")
        model.train()
        _forward_backward(model, patch)  # warm-up in this allocator mode
        model.zero_grad(set_to_none=True)
        with peak.measure() as m:
            _forward_backward(model, patch)
        model.zero_grad(set_to_none=True)
        results[name]["peak_mib_forward_backward"] = m["mib"]
        model.eval()
        with torch.no_grad():
            model(patch)
            with peak.measure() as m:
                model(patch)
        results[name]["peak_mib_inference"] = m["mib"]
        if name.startswith("medt3d-"):
            results[name]["by_size"] = _medt3d_memory_by_size(model, s.memory_sizes, in_ch, peak, log, name)


def _medt3d_memory_by_size(model: nn.Module, sizes: tuple[int, ...], in_ch: int, peak: PeakMemory, log: Log,
                           name: str) -> dict[str, Any]:
    """Inference peak and the largest attention-call peak at each cubic patch size."""
    out: dict[str, Any] = {}
    model.eval()
    for size in sizes:
        log(f"memory {name} at {size}^3")
        x = torch.randn(1, in_ch, size, size, size)
        with torch.no_grad():
            model(x)
            with peak.measure() as m:
                model(x)
            with attention_peaks(model, peak) as calls:
                model(x)
        out[str(size)] = {
            "voxels": size**3,
            "peak_mib_inference": m["mib"],
            "attention_peak_mib": round(max(calls), 2) if calls else None,
        }
    base = out[str(sizes[0])]
    for size in sizes:
        row = out[str(size)]
        row["voxel_ratio"] = round(row["voxels"] / base["voxels"], 3)
        if base["attention_peak_mib"]:
            row["attention_ratio"] = round(row["attention_peak_mib"] / base["attention_peak_mib"], 3)
        if base["peak_mib_inference"]:
            row["inference_ratio"] = round(row["peak_mib_inference"] / base["peak_mib_inference"], 3)
    return out


def _targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets for medt3d-small, as ratios measured in this run."""
    small = results.get("medt3d-small")
    if not small:
        return {}
    targets: dict[str, Any] = {}
    for base, need in (("unet", 1.0), ("unetr", 5.0), ("swinunetr", 20.0)):
        if base in results and "sliding_window_mvox_s" in small and "sliding_window_mvox_s" in results[base]:
            ratio = small["sliding_window_mvox_s"] / results[base]["sliding_window_mvox_s"]
            row = {"ratio": round(ratio, 2), "needed": need, "met": ratio >= need}
            if small.get("sliding_window_cpu_s") and results[base].get("sliding_window_cpu_s"):
                # CPU time: the work itself, steadier than wall time on a shared machine (1 thread)
                row["cpu_ratio"] = round(results[base]["sliding_window_cpu_s"] / small["sliding_window_cpu_s"], 2)
            targets[f"sliding_window_vs_{base}"] = row
    if "unetr" in results:
        for key in ("peak_mib_forward_backward", "peak_mib_inference"):
            ours, theirs = small.get(key), results["unetr"].get(key)
            if ours is not None and theirs is not None:
                targets[f"{key}_vs_unetr"] = {"medt3d_small": ours, "unetr": theirs, "met": ours <= theirs}
    return targets


def networks_markdown(report: dict[str, Any]) -> str:
    """Markdown tables of a ``networks`` report (as written to docs/benchmarks.md)."""

    def num(value: Any, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    env, st, nets = report["environment"], report["settings"], report["networks"]
    lines = [
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']} with {env['threads']} thread(s), "
        f"MONAI {env['monai']}; load average {env['load_average_start'][0]} at the start, "
        f"{env.get('load_average_end', ['?'])[0]} at the end.",
        "",
        f"| network | params | forward {st['patch'][0]}^3 (s) | fwd+bwd (s) | peak MiB fwd+bwd | peak MiB inference "
        f"| sliding window {'x'.join(map(str, st['volume']))} (s) | Mvox/s | sliding window CPU (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in nets.items():
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f} M | {num(r.get('forward_s'), '.3f')} "
            f"| {num(r.get('forward_backward_s'), '.3f')} | {num(r.get('peak_mib_forward_backward'), '.1f')} "
            f"| {num(r.get('peak_mib_inference'), '.1f')} | {num(r.get('sliding_window_s'), '.2f')} "
            f"| {num(r.get('sliding_window_mvox_s'), '.3f')} | {num(r.get('sliding_window_cpu_s'), '.2f')} |"
        )
    sized = {n: r["by_size"] for n, r in nets.items() if r.get("by_size")}
    if sized:
        lines += [
            "",
            "| network | patch | voxels (x of first) | peak MiB inference (x) | largest attention call MiB (x) |",
            "|---|---|---:|---:|---:|",
        ]
        for name, rows in sized.items():
            for size, row in rows.items():
                lines.append(
                    f"| {name} | {size}^3 | {row['voxels']:,} ({row['voxel_ratio']:g}) "
                    f"| {num(row['peak_mib_inference'], '.1f')} ({num(row.get('inference_ratio'), '.2f')}) "
                    f"| {num(row['attention_peak_mib'], '.2f')} ({num(row.get('attention_ratio'), '.2f')}) |"
                )
    if report.get("targets"):
        lines += ["", "| target (medt3d-small) | measured (wall) | CPU-time ratio | needed | met (wall) |",
                  "|---|---:|---:|---:|---|"]
        for key, t in report["targets"].items():
            if "ratio" in t:
                lines.append(f"| {key} | {t['ratio']:.2f}x | {num(t.get('cpu_ratio'), '.2f')}x | {t['needed']:g}x "
                             f"| {'yes' if t['met'] else 'no'} |")
            else:
                lines.append(f"| {key} | {t['medt3d_small']:.1f} MiB | | <= {t['unetr']:.1f} MiB (UNETR) "
                             f"| {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"
