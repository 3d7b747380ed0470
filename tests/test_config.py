from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medt3d.config import (
    CT_WINDOWS,
    Config,
    ConfigError,
    builtin_config_dir,
    config_to_dict,
    load_config,
    save_config,
)


def test_default_yaml_matches_dataclass_defaults():
    documented = yaml.safe_load((builtin_config_dir() / "default.yaml").read_text())
    assert documented == config_to_dict(Config())


def test_default_yaml_comments_every_key():
    lines = (builtin_config_dir() / "default.yaml").read_text().splitlines()
    key_lines = [ln for ln in lines if ln.startswith("  ") and ":" in ln]
    assert len(key_lines) == sum(len(section) for section in config_to_dict(Config()).values())
    assert [ln for ln in key_lines if "#" not in ln] == []


@pytest.mark.parametrize("name", ["default", "ct_abdomen", "mri", "demo"])
def test_presets_load(name):
    cfg = load_config(name)
    # each preset's own file is what was loaded, on top of the defaults: its values round-trip
    shipped = yaml.safe_load((builtin_config_dir() / f"{name}.yaml").read_text(encoding="utf-8")) or {}
    resolved = config_to_dict(cfg)
    for section, values in shipped.items():
        for key, value in values.items():
            got = resolved[section][key]
            assert (list(got) if isinstance(got, tuple) else got) == value, f"{name}: {section}.{key}"


def test_mri_preset_is_mr_and_ct_preset_is_ct():
    assert load_config("mri").data.modality == "MR"
    ct = load_config("ct_abdomen")
    assert ct.data.modality == "CT" and ct.data.labels == ["background", "spleen"]


def test_override_sets_typed_value():
    cfg = load_config("demo", ["train.max_epochs=3", "patch.roi_size=[16, 24, 32]", "train.max_norm=null"])
    assert cfg.train.max_epochs == 3
    assert cfg.patch.roi_size == (16, 24, 32)
    assert cfg.train.max_norm is None


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.max_epochs_typo=3", "unknown config key 'train.max_epochs_typo'"),
        ("bogus.key=1", "unknown config key 'bogus'"),
        ("patch.roi_size=[32, 32]", "'patch.roi_size' must be a list of 3"),
        ("preprocess.spacing=[-1, 1, 1]", "'preprocess.spacing' must be positive"),
        ("preprocess.spacing=[1, 1]", "'preprocess.spacing' must be a list of 3"),
        ("train.lr=fast", "'train.lr' must be a number"),
        ("train.max_epochs=2.5", "'train.max_epochs' must be an integer"),
        ("train.amp=1", "'train.amp' must be true or false"),
        ("preprocess.ct_window=sunset", "'preprocess.ct_window' = 'sunset'"),
        ("train.class_weights=[1.0]", "'train.class_weights' needs one weight per label"),
        ("infer.overlap=1.5", "'infer.overlap' must be in [0, 1)"),
        ("infer.roi_size=[64, 0, 64]", "'infer.roi_size' must be positive"),
        ("infer.roi_size=[64, 64]", "'infer.roi_size' must be a list of 3"),
        ("train.device=gpu0", "'train.device'"),
        ("train.clock=sundial", "'train.clock' = 'sundial'"),
    ],
)
def test_bad_values_name_key_and_file(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config("demo", [override])
    assert fragment in str(err.value)
    assert "demo.yaml" in str(err.value)


def test_unknown_key_in_file_names_file(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown config key 'train\.epochs'"):
        load_config(path)


def test_section_must_be_mapping(tmp_path: Path):
    path = tmp_path / "flat.yaml"
    path.write_text("train: 3\n")
    with pytest.raises(ConfigError, match=r"flat\.yaml: 'train' must be a mapping"):
        load_config(path)


def test_missing_file_and_unknown_preset():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")
    with pytest.raises(FileNotFoundError, match="not_a_preset"):
        load_config("not_a_preset")


def test_save_and_reload_round_trip(tmp_path: Path):
    cfg = load_config("demo", ["train.lr=0.01"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_ct_window_presets_present():
    for name in ("abdomen", "liver", "lung", "bone", "brain", "soft_tissue", "mediastinum"):
        width, _level = CT_WINDOWS[name]
        assert width > 0
