"""``medt3d bench --networks`` on tiny sizes: JSON layout, memory measurement, command line."""

from __future__ import annotations

import json

import pytest
import torch

from medt3d.bench.networks import (
    NetworkBenchSettings,
    PeakMemory,
    _targets,
    bench_networks,
    networks_markdown,
)
from medt3d.cli import main
from medt3d.networks import MedT3D

TINY = NetworkBenchSettings(
    networks=("medt3d-tiny",), patch=16, volume=(20, 24, 18), repeats=2, memory_sizes=(16, 32), threads=1
)

needs_proc = pytest.mark.skipif(not PeakMemory().available, reason="needs Linux /proc/self/clear_refs")


@needs_proc
def test_peak_memory_sees_a_known_allocation() -> None:
    peak = PeakMemory()
    peak.enable()
    try:
        with peak.measure() as small:
            torch.ones(1024)
        with peak.measure() as big:
            t = torch.ones(16 * 1024 * 1024)  # 64 MiB
            del t
    finally:
        peak.disable()
    assert 60 <= big["mib"] <= 80
    assert small["mib"] < 8


def test_bench_networks_reports_every_figure() -> None:
    threads = torch.get_num_threads()
    lines: list[str] = []
    report = bench_networks(settings=TINY, log=lines.append)
    assert torch.get_num_threads() == threads, "the thread setting must be restored"
    assert any("sliding window" in line for line in lines)
    row = report["networks"]["medt3d-tiny"]
    assert row["params"] == sum(p.numel() for p in MedT3D.from_preset("tiny", 1, 2).parameters())
    for key in ("forward_s", "forward_backward_s", "sliding_window_s", "sliding_window_mvox_s"):
        assert row[key] > 0, key
    assert row["sliding_window_runs"] == 2
    voxels = 20 * 24 * 18
    assert row["sliding_window_mvox_s"] == pytest.approx(voxels / row["sliding_window_s"] / 1e6, rel=0.05)  # s rounded
    assert report["settings"]["volume"] == [20, 24, 18]
    assert report["settings"]["overlap"] == 0.25 and report["settings"]["blend"] == "gaussian"
    json.dumps(report)  # JSON-ready
    table = networks_markdown(report)
    assert f"| medt3d-tiny | {row['params'] / 1e6:.2f} M | {row['forward_s']:.3f} |" in table
    if PeakMemory().available:
        assert row["peak_mib_forward_backward"] > 0
        by_size = row["by_size"]
        assert set(by_size) == {"16", "32"}
        assert by_size["32"]["voxel_ratio"] == 8.0
        assert by_size["32"]["attention_peak_mib"] > by_size["16"]["attention_peak_mib"]


def test_targets_are_ratios_of_this_run() -> None:
    results = {
        "medt3d-small": {"sliding_window_mvox_s": 2.0, "peak_mib_inference": 20.0, "peak_mib_forward_backward": 90.0},
        "unet": {"sliding_window_mvox_s": 1.0},
        "unetr": {"sliding_window_mvox_s": 0.5, "peak_mib_inference": 300.0, "peak_mib_forward_backward": 50.0},
        "swinunetr": {"sliding_window_mvox_s": 0.05},
    }
    t = _targets(results)
    assert t["sliding_window_vs_unet"] == {"ratio": 2.0, "needed": 1.0, "met": True}
    assert t["sliding_window_vs_unetr"] == {"ratio": 4.0, "needed": 5.0, "met": False}
    assert t["sliding_window_vs_swinunetr"]["met"] is True
    assert t["peak_mib_inference_vs_unetr"]["met"] is True
    assert t["peak_mib_forward_backward_vs_unetr"]["met"] is False
    assert _targets({"unet": {}}) == {}


def test_bench_command_prints_json_on_stdout_and_progress_on_stderr(tmp_path, capsys) -> None:
    out_file = tmp_path / "bench.json"
    code = main([
        "bench", "--networks", "--names", "medt3d-tiny", "--patch", "16", "--volume", "16", "20", "16",
        "--repeats", "1", "--memory-sizes", "16", "--threads", "1", "--output", str(out_file),
        "--markdown", str(tmp_path / "bench.md"),
    ])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert list(report) == ["networks"]
    assert report["networks"]["networks"]["medt3d-tiny"]["sliding_window_mvox_s"] > 0
    assert "[bench]" in captured.err and "[bench]" not in captured.out
    assert json.loads(out_file.read_text()) == report
    assert "| medt3d-tiny |" in (tmp_path / "bench.md").read_text()


def test_bench_command_rejects_bad_sizes(capsys) -> None:
    assert main(["bench", "--names", "medt3d-tiny", "--patch", "8"]) == 2
    assert "patch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--names", "resnet"])


def test_bench_networks_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="resnet"):
        bench_networks(settings=NetworkBenchSettings(networks=("resnet",)))
