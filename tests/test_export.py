"""MedT3D exports: TorchScript (script and trace) and ONNX (checked with onnxruntime), any input size."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from medt3d.bundle.export import export_onnx
from medt3d.networks import MedT3D

# sizes: the example size used for tracing/export, then other sizes (odd, non-cubic, batch 2)
EXAMPLE = (1, 1, 32, 32, 32)
OTHERS = [(2, 1, 24, 40, 16), (1, 1, 21, 30, 17)]


def _net(preset: str = "tiny") -> MedT3D:
    torch.manual_seed(0)
    net = MedT3D.from_preset(preset, in_channels=1, out_channels=3).eval()
    # non-default gates, so the export must carry every gated term
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".gate_" in name:
                p.fill_(0.3)
    return net


def _inputs() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(*s) for s in [EXAMPLE, *OTHERS]]


def test_torchscript_script_matches_eager_at_any_size(tmp_path) -> None:
    net = _net("tiny")
    scripted = torch.jit.script(net)
    path = tmp_path / "net.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        for x in _inputs():
            expected = net(x)
            torch.testing.assert_close(loaded(x), expected, atol=1e-4, rtol=1e-4)


def test_torchscript_trace_matches_eager_at_any_size() -> None:
    net = _net()
    inputs = _inputs()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, inputs[0])
        for x in inputs:
            torch.testing.assert_close(traced(x), net(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_onnx_export_runs_in_onnxruntime_at_any_size(preset: str, tmp_path) -> None:
    net = _net(preset)
    inputs = _inputs()
    path = export_onnx(net, tmp_path / "net.onnx", inputs[0], any_size=True)  # what `medt3d export --onnx` writes
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for x in inputs:
            (out,) = session.run(["pred"], {"image": x.numpy()})
            expected = net(x).numpy()
            assert out.shape == expected.shape
            np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_onnx_export_with_fixed_size_refuses_other_sizes(tmp_path) -> None:
    net = _net("tiny")
    inputs = _inputs()
    path = export_onnx(net, tmp_path / "net.onnx", inputs[0], any_size=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["pred"], {"image": inputs[0].numpy()})
    assert out.shape == (1, 3, 32, 32, 32)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(["pred"], {"image": inputs[2].numpy()})


def test_onnx_export_failure_is_a_clear_error(tmp_path) -> None:
    class Unexportable(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("this network cannot be traced")

    with pytest.raises(ValueError, match="ONNX export of the network failed: RuntimeError: this network cannot be traced"):
        export_onnx(Unexportable(), tmp_path / "bad.onnx", torch.zeros(1, 1, 8, 8, 8), any_size=False)
