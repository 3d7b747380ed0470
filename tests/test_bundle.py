"""Bundle parts that need no trained model: maintained sources, generated configs, metadata, safe zips."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import jsonschema
import pytest
import torch
from monai.bundle import ConfigParser
from support import root_cause

from medt3d.bundle.configs import (
    evaluate_config,
    inference_config,
    multi_gpu_train_config,
    train_config,
)
from medt3d.bundle.docs import ModelFacts, build_metadata, build_readme, input_value_range
from medt3d.bundle.runtime import CheckImaged, PredictorInferer
from medt3d.bundle.source import (
    contract_differences,
    generic_source,
    list_bundle_sources,
    load_bundle_source,
)
from medt3d.config import load_config, save_config
from medt3d.data.phantoms import CLASS_NAMES
from medt3d.data.transforms import build_infer_transforms
from medt3d.models.archive import UnsafeZipError, check_zip_members, unpack_bundle, zip_bundle
from medt3d.models.layout import BUNDLE_CONFIG
from medt3d.training.engine import KEY_METRIC

TINY = ["preprocess.spacing=[3,3,3]", "patch.roi_size=[16,16,16]", "network.preset=tiny"]


# ----------------------------------------------------------------------------------------- sources


def test_maintained_sources_exist_and_load():
    assert {"spleen_ct_medt3d", "phantom_demo_medt3d"} <= set(list_bundle_sources())
    for name in list_bundle_sources():
        source = load_bundle_source(name)
        assert source.version in source.changelog
        assert any("Medical Transformer" in r for r in source.metadata["references"])
        for key in ("task", "description", "authors", "copyright", "intended_use", "data_source"):
            assert source.metadata[key].strip(), (name, key)
        assert "Apache License" in source.license_text


def test_spleen_source_follows_msd_task09_conventions():
    source = load_bundle_source("spleen_ct_medt3d")
    cfg = source.cfg
    assert cfg.data.modality == "CT"
    assert cfg.data.in_channels == 1
    assert cfg.data.num_classes == 2 and cfg.data.labels[1] == "spleen"
    assert cfg.network.name == "medt3d"
    assert "CC-BY-SA" in source.license_text and "Task09" in source.metadata["data_source"]


def test_phantom_demo_source_is_the_demo_config():
    source = load_bundle_source("phantom_demo_medt3d")
    assert source.config_ref == "demo"
    assert source.cfg == load_config("demo")
    assert tuple(source.cfg.data.labels) == CLASS_NAMES


def test_maintained_sources_give_schema_valid_metadata(meta_schema: dict):
    for name in list_bundle_sources():
        source = load_bundle_source(name)
        facts = ModelFacts(cfg=source.cfg, parameters=1)
        metadata = build_metadata(source, facts)
        jsonschema.validate(metadata, meta_schema)
        image = metadata["network_data_format"]["inputs"]["image"]
        pred = metadata["network_data_format"]["outputs"]["pred"]
        assert image["num_channels"] == source.cfg.data.in_channels
        assert pred["num_channels"] == source.cfg.data.num_classes
        assert pred["channel_def"] == {str(i): n for i, n in enumerate(source.cfg.data.labels)}
        assert image["spatial_shape"] == list(source.cfg.patch.roi_size)


def test_generic_mr_metadata_is_valid_and_has_no_fake_range(meta_schema: dict):
    cfg = load_config("mri")
    metadata = build_metadata(generic_source(cfg), ModelFacts(cfg=cfg, parameters=1))
    jsonschema.validate(metadata, meta_schema)
    assert metadata["network_data_format"]["inputs"]["image"]["value_range"] == []  # z-score is unbounded
    assert metadata["network_data_format"]["inputs"]["image"]["format"] == "magnitude"
    assert input_value_range(load_config("demo")) == [0.0, 1.0]


def test_metadata_missing_a_required_field_fails_the_schema(meta_schema: dict):
    source = load_bundle_source("spleen_ct_medt3d")
    metadata = build_metadata(source, ModelFacts(cfg=source.cfg, parameters=1))
    del metadata["required_packages_version"]
    with pytest.raises(jsonschema.ValidationError, match="required_packages_version"):
        jsonschema.validate(metadata, meta_schema)


def _write_source(folder: Path, spec: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "bundle.yaml").write_text(spec)
    return folder


_GOOD = """
name: Test bundle
version: 0.2.0
changelog: {0.2.0: second, 0.1.0: first}
config: demo
metadata:
  task: t
  description: d
  authors: a
  copyright: c
  intended_use: u
  data_source: s
  references: ["Valanarasu et al. Medical Transformer: Gated Axial-Attention. MICCAI 2021"]
"""


def test_a_source_folder_path_loads(tmp_path: Path):
    source = load_bundle_source(_write_source(tmp_path / "mine", _GOOD))
    assert source.key == "mine" and source.version == "0.2.0" and source.cfg.network.preset == "tiny"


@pytest.mark.parametrize("change, message", [
    (("version: 0.2.0", "version: 0.3.0"), "version '0.3.0' must be listed in 'changelog'"),
    (("  task: t\n", ""), r"missing or empty key\(s\) \['task'\] in 'metadata'"),
    (("name: Test bundle", "name: Test bundle\nlicence: LICENSE"), r"unknown key\(s\) \['licence'\]"),
    (("config: demo", "config: nothere.yaml"), "its config 'nothere.yaml' does not load"),
    (("Medical Transformer", "Some Other Paper"), "must cite MedT"),
    (("config: demo", "config: demo\nlicense: MISSING"), "licence file .*MISSING not found"),
])
def test_a_broken_source_is_refused_naming_the_file_and_field(tmp_path: Path, change, message):
    folder = _write_source(tmp_path / "broken", _GOOD.replace(*change))
    with pytest.raises(ValueError, match=message) as err:
        load_bundle_source(folder)
    assert str(folder / "bundle.yaml") in str(err.value)


def test_an_unknown_source_lists_the_maintained_ones():
    with pytest.raises(FileNotFoundError, match="spleen_ct_medt3d"):
        load_bundle_source("no_such_bundle")


def test_contract_differences_name_the_keys():
    spleen = load_bundle_source("spleen_ct_medt3d")
    problems = contract_differences(load_config("demo"), spleen)
    assert len(problems) == 1 and problems[0].startswith("data.labels is ['background', 'organ_a'")
    mr = contract_differences(load_config("ct_abdomen", ["data.modality=MR", "data.in_channels=2"]), spleen)
    assert [p.split(" ")[0] for p in mr] == ["data.modality", "data.in_channels"]
    assert contract_differences(spleen.cfg, spleen) == []


# ----------------------------------------------------------------------------------------- configs


def _flat_ids(config: dict) -> set[str]:
    parser = ConfigParser(config)
    ids: set[str] = set()

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                ids.add(f"{prefix}{k}")
                walk(v, f"{prefix}{k}#")

    walk(parser.get(), "")
    return ids


def test_configs_use_the_model_zoo_key_names():
    infer_ids = _flat_ids(inference_config())
    for key in ("bundle_root", "device", "dataset_dir", "output_dir", "network_def", "preprocessing", "inferer",
                "postprocessing", "dataset", "evaluator", "imports"):
        assert key in infer_ids, key
    train_ids = _flat_ids(train_config())
    for key in ("bundle_root", "device", "dataset_dir", "output_dir", "train#trainer", "train#trainer#max_epochs",
                "train#dataset", "train#inferer", "train#handlers", "validate#evaluator", "validate#handlers",
                "tracking_uri", "experiment_name", "run"):
        assert key in train_ids, key


def test_configs_call_medt3d_builders_instead_of_spelling_out_transforms():
    text = json.dumps([inference_config(), evaluate_config(), train_config(), multi_gpu_train_config()])
    for literal in ("Spacingd", "Orientationd", "ScaleIntensityRanged", "NormalizeIntensityd", "LoadImaged",
                    "RandCropByPosNegLabeld", "RandFlipd", "SlidingWindowInferer", "DiceCELoss", "AdamW",
                    "MedT3D(", "SupervisedTrainer", "CheckpointSaver", "LrScheduleHandler"):
        assert literal not in text, literal
    for builder in ("build_network", "bundle.runtime.infer_transforms", "build_postprocessing",
                    "training.engine.build_training"):
        assert builder in text, builder


def _parser_for(tmp_path: Path, config: dict, cfg) -> ConfigParser:
    save_config(cfg, tmp_path / BUNDLE_CONFIG)
    parser = ConfigParser(config)
    parser["bundle_root"] = str(tmp_path)
    return parser


def _kinds(pipeline) -> list[str]:
    return [type(t).__name__ for t in pipeline.transforms]


def test_inference_config_builds_what_medt3d_infer_builds(tmp_path: Path):
    cfg = load_config("demo", [*TINY, "infer.overlap=0.5", "infer.sw_batch_size=3"])
    parser = _parser_for(tmp_path, inference_config(), cfg)
    assert parser.get_parsed_content("medt3d_cfg") == cfg
    pre = parser.get_parsed_content("preprocessing")
    expected = _kinds(build_infer_transforms(cfg))
    added = {"CheckImaged", "CaseNamed"}  # the checks and case naming of medt3d infer
    assert [k for k in _kinds(pre) if k not in added] == expected and added <= set(_kinds(pre))
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, PredictorInferer) and inferer.cfg == cfg
    net = parser.get_parsed_content("network_def")
    assert type(net).__name__ == "MedT3D"
    assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, cfg.data.num_classes, 16, 16, 16)


def test_train_config_assembles_the_engine_of_medt3d_train(tmp_path: Path):
    from medt3d.data.phantoms import write_phantom_dataset
    from medt3d.training.engine import Training

    data = write_phantom_dataset(tmp_path / "data", 2, 1, shape=(24, 24, 16))
    cfg = load_config("demo", [*TINY, "tracking.mlflow=false", "tracking.tensorboard=false", "data.cache=none"])
    parser = _parser_for(tmp_path, train_config(), cfg)
    parser["dataset_dir"] = str(data)
    parser["output_dir"] = str(tmp_path / "out")
    parser["medt3d_overrides"] = ["train.val_interval=3", "train.lr=0.002"]
    parser["train#trainer#max_epochs"] = 7
    training = parser.get_parsed_content("train#trainer")
    assert isinstance(training, Training)
    expected = load_config(tmp_path / BUNDLE_CONFIG, ["train.val_interval=3", "train.lr=0.002", "train.max_epochs=7"])
    assert training.cfg == expected
    assert parser.get_parsed_content("train#dataset") is training.train_dataset
    assert parser.get_parsed_content("validate#evaluator") is training.evaluator
    assert training.trainer.state.max_epochs == 7 and len(training.datalist.train) == 2
    assert training.trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.002)
    assert (tmp_path / "out" / "config.yaml").is_file()  # a medt3d run folder


def test_train_config_refuses_an_unknown_override(tmp_path: Path):
    parser = _parser_for(tmp_path, train_config(), load_config("demo", TINY))
    parser["medt3d_overrides"] = ["train.max_epoch=3"]
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps what an expression raises
        parser.get_parsed_content("medt3d_cfg")
    assert "train.max_epoch" in str(root_cause(raised.value))


def test_multi_gpu_train_config_refuses_to_run_without_torchrun(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    parser = _parser_for(tmp_path, {**train_config(), **multi_gpu_train_config()}, load_config("demo", TINY))
    parser["output_dir"] = str(tmp_path / "out")
    with pytest.raises(RuntimeError) as raised:
        parser.get_parsed_content("train#trainer")
    cause = root_cause(raised.value)
    assert isinstance(cause, ValueError) and "runs under torchrun" in str(cause)
    assert not (tmp_path / "out").exists()


def test_bundle_precision_fp16_is_refused_on_a_cpu():
    cfg = load_config("demo", TINY)
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        PredictorInferer(cfg, "cpu", precision="fp16")
    with pytest.raises(ValueError, match="'fp8' is not one of"):
        PredictorInferer(cfg, "cpu", precision="fp8")
    assert PredictorInferer(cfg, "cpu", precision="bf16").cfg.infer.precision == "bf16"


def test_check_imaged_refuses_nan_and_wrong_channels():
    from monai.data import MetaTensor

    check = CheckImaged(load_config("demo", TINY))
    image = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "scan.nii.gz"})
    check({"image": image})
    image[0, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="scan.nii.gz: 1 NaN"):
        check({"image": image})
    with pytest.raises(ValueError, match="2 channel.*expects 1"):
        check({"image": MetaTensor(torch.zeros(2, 4, 4, 4), meta={"filename_or_obj": "two.nii.gz"})})


def test_readme_reports_summary_metrics_and_how_to_run():
    source = load_bundle_source("spleen_ct_medt3d")
    summary = {"n_cases": 3, "split": "val", "foreground_mean": {"dice": 0.8123, "iou": 0.7, "hd95_mm": 4.5,
                                                                 "asd_mm": 1.25},
               "per_class": {"spleen": {m: {"mean": v, "std": 0.01} for m, v in
                                        (("dice", 0.8123), ("iou", 0.7), ("hd95_mm", 4.5), ("asd_mm", 1.25))}}}
    facts = ModelFacts(cfg=source.cfg, parameters=1234, epoch=10, best_epoch=8, val_metrics={KEY_METRIC: 0.8},
                       summary=summary, summary_path=Path("summary.json"))
    text = build_readme(source, facts, "spleen_ct_medt3d")
    assert "| spleen | 0.812 ± 0.010 | 0.700 ± 0.010 | 4.500 ± 0.010 | 1.250 ± 0.010 |" in text
    assert "-150 to 250 HU" in text and "1.5 x 1.5 x 2 mm" in text and "1,234 parameters" in text
    assert "python -m monai.bundle run --config_file configs/inference.json" in text
    assert "## Limits" in text and "Not a medical device" in text
    metadata = build_metadata(source, facts)
    assert metadata["eval_metrics"] == {KEY_METRIC: 0.8, "mean_dice": 0.8123, "dice_spleen": 0.8123}


class _Payload:
    """A pickled object that weights_only loading must refuse to build."""

    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_bundle_weights_load_with_weights_only(tmp_path: Path, capsys):
    from medt3d.models.loading import load_bundle_model
    from medt3d.networks import build_network

    cfg = load_config("demo", TINY)
    save_config(cfg, tmp_path / BUNDLE_CONFIG)
    (tmp_path / "models").mkdir()
    torch.save({"weight": _Payload()}, tmp_path / "models" / "model.pt")
    with pytest.raises(ValueError, match="model.pt: not a readable state_dict"):
        load_bundle_model(tmp_path)
    assert "code ran" not in capsys.readouterr().out
    state = build_network(cfg).state_dict()
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / "models" / "model.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_bundle_model(tmp_path)


# ----------------------------------------------------------------------------------------- zips


def _zip(path: Path, members: list[tuple[str, bytes]], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_zip_round_trip_keeps_the_bundle_folder(tmp_path: Path):
    bundle = tmp_path / "my_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text("{}")
    (bundle / "LICENSE").write_text("licence")
    zip_path = zip_bundle(bundle)
    assert zip_path == tmp_path / "my_bundle.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    assert sorted(names) == ["my_bundle/LICENSE", "my_bundle/configs/inference.json"]
    root = unpack_bundle(zip_path, tmp_path / "unpacked")
    assert root == tmp_path / "unpacked" / "my_bundle"
    assert (root / "LICENSE").read_text(encoding="utf-8") == "licence" and (root / "configs" / "inference.json").read_text(encoding="utf-8") == "{}"


@pytest.mark.parametrize("members, links, what", [
    ([("b/ok.txt", b"x"), ("../evil.txt", b"x")], (), "'../evil.txt' climbs out"),
    ([("b/../../evil.txt", b"x")], (), "climbs out"),
    ([("/tmp/evil.txt", b"x")], (), "'/tmp/evil.txt' has an absolute path"),
    ([("C:/evil.txt", b"x")], (), "has an absolute path"),
    ([("b/ok.txt", b"x")], ("b/link",), "'b/link' is a symbolic link"),
    ([("b\\..\\..\\evil.txt", b"x")], (), "backslash"),
])
def test_malicious_zips_are_refused_and_nothing_is_written(tmp_path: Path, members, links, what):
    zip_path = _zip(tmp_path / "evil.zip", members, links)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UnsafeZipError, match=what):
        unpack_bundle(zip_path, work / "dest")
    assert list(work.iterdir()) == []  # no destination, no temporary folder
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_unpack_refuses_a_non_empty_destination_and_non_zips(tmp_path: Path):
    zip_path = _zip(tmp_path / "ok.zip", [("b/ok.txt", b"x")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        unpack_bundle(zip_path, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text(encoding="utf-8") == "mine"
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not a zip file"):
        check_zip_members(tmp_path / "fake.zip")


def test_unpack_only_what_loading_needs_and_check_the_free_space(tmp_path: Path, monkeypatch):
    import errno
    from collections import namedtuple

    import medt3d.models.archive as archive

    members = [("b/configs/medt3d.yaml", b"data: {}\n"), ("b/models/model.pt", b"w" * 1000),
               ("b/docs/big.bin", b"\0" * 3_000_000)]  # compresses to little, unpacks to 3 MB
    zip_path = _zip(tmp_path / "b.zip", members)
    root = unpack_bundle(zip_path, tmp_path / "some", only=("configs/medt3d.yaml", "models/model.pt"))
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert found == ["configs/medt3d.yaml", "models/model.pt"]

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 500, 500))
    with pytest.raises(OSError) as caught:
        unpack_bundle(zip_path, tmp_path / "full_disk")
    assert caught.value.errno == errno.ENOSPC and str(zip_path) in str(caught.value)
    assert not (tmp_path / "full_disk").exists()
