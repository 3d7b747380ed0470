"""Datalists with a test split, or only validation/test cases: evaluate scores them, train refuses clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import THRESHOLD_HU, ThresholdNet, blob_volume, save, threshold_config, tiny_cfg

from medt3d.data.datalist import build_datalist
from medt3d.training.run_data import prepare_datalist


@pytest.fixture()
def cases(tmp_path: Path) -> list[dict[str, str]]:
    """Three blob scans with exact labels, of different sizes (so each case's Dice is its own)."""
    out = []
    for i, shape in enumerate([(16, 16, 8), (18, 14, 8), (20, 16, 10)]):
        image, affine = blob_volume(shape, (1.5, 1.5, 3.0))
        out.append({"name": f"case{i}", "image": str(save(tmp_path / f"case{i}_ct.nii.gz", image, affine)),
                    "label": str(save(tmp_path / f"case{i}_label.nii.gz",
                                      (image > THRESHOLD_HU).astype(np.uint8), affine))})
    return out


def _evaluate(monkeypatch, data: Path, out: Path, **kwargs) -> dict:
    import medt3d.evaluation.evaluate as evaluation

    monkeypatch.setattr("medt3d.inference.ensemble.load_model", lambda _: (ThresholdNet(), threshold_config()))  # evaluate loads through load_members
    return evaluation.evaluate("threshold", data, out, overlays=False, **kwargs)


@pytest.mark.parametrize("key", ["test", "validation", "val"])
def test_evaluate_scores_a_datalist_that_has_only_one_scoring_split(cases, tmp_path, monkeypatch, key):
    data = tmp_path / "test.json"
    data.write_text(json.dumps({key: cases[:2]}))
    summary = _evaluate(monkeypatch, data, tmp_path / "eval")
    assert summary["n_cases"] == 2 and summary["per_class"]["blob"]["dice"]["mean"] == pytest.approx(1.0)
    if key == "test":
        assert _evaluate(monkeypatch, data, tmp_path / "eval_test", split="test")["n_cases"] == 2
        with pytest.raises(ValueError, match=r"no train cases to evaluate \(train 0, val 0, test 2\)"):
            _evaluate(monkeypatch, data, tmp_path / "eval_train", split="train")


def test_splits_are_kept_apart_and_scored_separately(cases, tmp_path, monkeypatch):
    data = tmp_path / "all.json"
    data.write_text(json.dumps({"train": [cases[0]], "val": [cases[1]], "test": [cases[2]]}))
    datalist = build_datalist(data)
    assert [[c["name"] for c in s] for s in (datalist.train, datalist.val, datalist.test)] == [
        ["case0"], ["case1"], ["case2"]]
    saved = build_datalist(datalist.save(tmp_path / "saved.json"))  # the test split round-trips
    assert [c["name"] for c in saved.test] == ["case2"]
    rows = {split: _evaluate(monkeypatch, data, tmp_path / split, split=split)["n_cases"]
            for split in ("val", "test", "train", "all")}
    assert rows == {"val": 1, "test": 1, "train": 1, "all": 3}
    metrics = (tmp_path / "test" / "metrics.csv").read_text()
    assert "case2" in metrics and "case0" not in metrics and "case1" not in metrics

    data.write_text(json.dumps({"train": [cases[0]], "test": [cases[0]]}))
    with pytest.raises(ValueError, match="case 'case0' is in both train and test"):
        build_datalist(data)


def test_msd_test_images_without_labels_are_a_split_not_a_problem(cases, tmp_path, monkeypatch):
    data = tmp_path / "dataset.json"
    data.write_text(json.dumps({"labels": {"0": "background", "1": "blob"}, "modality": {"0": "CT"},
                                "training": [{"image": c["image"], "label": c["label"]} for c in cases[:2]],
                                "test": [cases[2]["image"]]}))
    datalist = build_datalist(data)
    assert len(datalist.train) == 2 and [c.get("label") for c in datalist.test] == [None]
    # no validation split: the model's own validation share of the training cases (issue 34), one of two
    assert _evaluate(monkeypatch, data, tmp_path / "eval")["n_cases"] == 1
    assert _evaluate(monkeypatch, data, tmp_path / "eval_all", split="all")["n_cases"] == 2
    with pytest.raises(ValueError, match="evaluation needs a label for every case; none for .*case2_ct"):
        _evaluate(monkeypatch, data, tmp_path / "eval_test", split="test")


def test_train_refuses_a_datalist_without_training_cases(cases, tmp_path):
    data = tmp_path / "test.json"
    data.write_text(json.dumps({"test": cases}))
    with pytest.raises(ValueError, match=r"no training cases found \(only 0 validation and 3 test case\(s\)\)"):
        prepare_datalist(tiny_cfg(), data)
