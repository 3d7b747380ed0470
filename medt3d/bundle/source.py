"""Bundle sources: the hand-maintained parts of a MONAI bundle (``bundles/<name>/`` in the repository).

A source folder holds ``bundle.yaml`` (name, version, changelog, config, metadata fields, README
parts, licence file), the medt3d config the model is trained with, and ``LICENSE``. ``medt3d
export`` merges a source with a checkpoint; :func:`generic_source` describes a checkpoint exported
without one. See ``bundles/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medt3d.config import Config, ConfigError, config_to_dict, load_config
from medt3d.errors import InputError, hint_of

__all__ = [
    "BundleSource",
    "CONTRACT_KEYS",
    "MEDT_REFERENCE",
    "bundle_sources_dir",
    "contract_differences",
    "generic_source",
    "list_bundle_sources",
    "load_bundle_source",
    "recipe_differences",
]

#: The paper every bundle cites.
MEDT_REFERENCE = (
    "Valanarasu JMJ, Oza P, Hacihaliloglu I, Patel VM. Medical Transformer: Gated Axial-Attention for "
    "Medical Image Segmentation. MICCAI 2021. arXiv:2102.10662"
)

#: Config keys that define what a bundle's model takes and gives: a checkpoint must match its source here.
CONTRACT_KEYS = (("data", "modality"), ("data", "in_channels"), ("data", "labels"))
#: Config sections whose other differences from the source's recipe are reported (not refused).
_RECIPE_SECTIONS = ("preprocess", "patch", "network")

_TOP_KEYS = {"name", "version", "changelog", "config", "license", "metadata", "readme"}
_REQUIRED_TOP = ("name", "version", "changelog", "config", "metadata")
_METADATA_KEYS = {
    "task", "description", "authors", "copyright", "intended_use", "data_source", "data_type",
    "image_classes", "label_classes", "pred_classes", "references",
}
_REQUIRED_METADATA = ("task", "description", "authors", "copyright", "intended_use", "data_source", "references")
_README_KEYS = {"overview", "data", "limitations"}

_DEFAULT_LICENSE = """Copyright (c) medt3d contributors

Licensed under the Apache License, Version 2.0 (the "License"); you may not use the code,
configuration files and model weights of this bundle except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the
License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND,
either express or implied. See the License for the specific language governing permissions
and limitations under the License.

The licence of the data the model was trained on may add conditions: check it.
"""


@dataclass
class BundleSource:
    """The hand-maintained parts of a bundle.

    Attributes:
        key: the bundle's folder name (``spleen_ct_medt3d``); also the exported folder's default name.
        name: human-readable name.
        version: bundle version (listed in ``changelog``).
        changelog: version -> what changed.
        cfg: the medt3d config the model is trained with (the recipe).
        config_ref: where that config came from (a file path or a preset name).
        metadata: hand-written ``metadata.json`` fields (task, description, authors...).
        readme: hand-written README parts: ``overview``, ``data``, ``limitations``.
        license_text: the bundle's LICENSE.
        path: the source folder, or ``None`` for :func:`generic_source`.
    """

    key: str
    name: str
    version: str
    changelog: dict[str, str]
    cfg: Config
    config_ref: str
    metadata: dict[str, Any]
    readme: dict[str, str] = field(default_factory=dict)
    license_text: str = _DEFAULT_LICENSE
    path: Path | None = None


def bundle_sources_dir() -> Path:
    """Folder of the maintained bundle sources (``bundles/`` in the repository, ``medt3d.bundles`` installed)."""
    return Path(str(resources.files("medt3d.bundles")))


def list_bundle_sources() -> list[str]:
    """Names of the maintained bundle sources."""
    root = bundle_sources_dir()
    return sorted(p.parent.name for p in root.glob("*/bundle.yaml")) if root.is_dir() else []


def _fail(source: Path, message: str) -> ValueError:
    hint = "" if hint_of(message) else "; fix the bundle source file"
    return InputError(f"bundle source {source}: {message}{hint}")


def _check_keys(values: Any, allowed: set[str], required: tuple[str, ...], where: str, source: Path) -> None:
    if not isinstance(values, dict):
        raise _fail(source, f"'{where}' must be a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise _fail(source, f"unknown key(s) {unknown} in '{where}'; known: {sorted(allowed)}")
    missing = [k for k in required if values.get(k) in (None, "", [], {})]
    if missing:
        raise _fail(source, f"missing or empty key(s) {missing} in '{where}'")


def load_bundle_source(name_or_path: str | Path) -> BundleSource:
    """Read and check a bundle source: a name from ``bundles/`` or a folder holding ``bundle.yaml``.

    Raises:
        FileNotFoundError: no such source (the message lists the maintained ones).
        ValueError: ``bundle.yaml`` is malformed, misses a required field, has an unknown key, or
            its config does not load; the message names the file and the field.
    """
    path = Path(name_or_path)
    if not (path / "bundle.yaml").is_file():
        candidate = bundle_sources_dir() / str(name_or_path)
        if "/" in str(name_or_path) or not (candidate / "bundle.yaml").is_file():
            raise FileNotFoundError(
                f"bundle source {str(name_or_path)!r} not found: give a folder with a bundle.yaml or one of "
                f"{list_bundle_sources()} (in {bundle_sources_dir()})")
        path = candidate
    spec_file = path / "bundle.yaml"
    try:
        spec = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise _fail(spec_file, f"not valid YAML: {' '.join(str(err).split())}") from None
    _check_keys(spec, _TOP_KEYS, _REQUIRED_TOP, "top level", spec_file)
    _check_keys(spec["metadata"], _METADATA_KEYS, _REQUIRED_METADATA, "metadata", spec_file)
    _check_keys(spec.get("readme") or {}, _README_KEYS, (), "readme", spec_file)
    version = str(spec["version"])
    changelog = spec["changelog"]
    if not isinstance(changelog, dict) or version not in {str(k) for k in changelog}:
        raise _fail(spec_file, f"version {version!r} must be listed in 'changelog' (a mapping version -> text)")
    references = spec["metadata"]["references"]
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise _fail(spec_file, "'metadata.references' must be a list of strings")
    if not any("Medical Transformer" in r for r in references):
        raise _fail(spec_file, "'metadata.references' must cite MedT (Valanarasu et al., Medical Transformer)")

    config_ref = str(spec["config"])
    config_file = path / config_ref
    try:
        cfg = load_config(config_file if config_file.is_file() else config_ref)
    except (ConfigError, FileNotFoundError) as err:
        raise _fail(spec_file, f"its config {config_ref!r} does not load: {err}") from None
    license_text = _DEFAULT_LICENSE
    if spec.get("license"):
        license_file = path / str(spec["license"])
        if not license_file.is_file():
            raise _fail(spec_file, f"licence file {license_file} not found")
        license_text = license_file.read_text(encoding="utf-8")
    return BundleSource(
        key=path.name, name=str(spec["name"]), version=version,
        changelog={str(k): str(v) for k, v in changelog.items()}, cfg=cfg,
        config_ref=str(config_file) if config_file.is_file() else config_ref,
        metadata=dict(spec["metadata"]), readme={k: str(v) for k, v in (spec.get("readme") or {}).items()},
        license_text=license_text, path=path,
    )


def generic_source(cfg: Config, key: str = "medt3d_model") -> BundleSource:
    """A source describing a checkpoint exported without ``--name``, from its own config."""
    classes = ", ".join(f"{i}: {n}" for i, n in enumerate(cfg.data.labels))
    targets = ", ".join(cfg.data.labels[1:])
    return BundleSource(
        key=key,
        name=f"MedT3D {cfg.data.modality} segmentation ({targets})",
        version="0.1.0",
        changelog={"0.1.0": "exported by medt3d export"},
        cfg=cfg,
        config_ref="(the checkpoint's own config)",
        metadata={
            "task": f"Segmentation of {targets} in {cfg.data.modality}",
            "description": (f"A 3D Medical Transformer (MedT3D, gated axial attention) trained with medt3d to segment "
                            f"{targets} in {cfg.data.modality} volumes."),
            "authors": "medt3d user",
            "copyright": "Copyright (c) the bundle's authors",
            "intended_use": "Research only; not a medical device, not for diagnosis or treatment decisions.",
            "data_source": "Not recorded in the checkpoint: see the training run that produced it.",
            "data_type": "nibabel",
            "label_classes": classes,
            "pred_classes": classes,
            "references": [MEDT_REFERENCE],
        },
        readme={"limitations": "Only as good as its training data, which this export does not describe: "
                               "validate it on your own scans before use."},
    )


def _get(values: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        values = values[k]
    return values


def contract_differences(model_cfg: Config, source: BundleSource) -> list[str]:
    """Contract keys (modality, input channels, labels) where the checkpoint's config differs from the source's."""
    a, b = config_to_dict(model_cfg), config_to_dict(source.cfg)
    return [f"{'.'.join(k)} is {_get(a, k)!r} in the checkpoint but {_get(b, k)!r} in bundle source "
            f"{source.key} ({source.config_ref})" for k in CONTRACT_KEYS if _get(a, k) != _get(b, k)]


def recipe_differences(model_cfg: Config, source: BundleSource) -> list[str]:
    """Preprocessing, patch and network settings where the checkpoint was trained differently from the recipe."""
    a, b = config_to_dict(model_cfg), config_to_dict(source.cfg)
    return [f"{section}.{key}: {a[section][key]!r} (recipe: {b[section][key]!r})"
            for section in _RECIPE_SECTIONS for key in a[section] if a[section][key] != b[section][key]]
