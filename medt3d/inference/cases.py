"""The cases of a batch: expanding ``medt3d infer``'s inputs into named cases, channel files into one case each."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medt3d.data.case_names import is_label_path
from medt3d.data.nnunet import channel_file
from medt3d.data.readers import find_inputs, strip_suffix
from medt3d.errors import InputError
from medt3d.inference.outputs import case_outputs

__all__ = ["Case", "check_no_overwrite", "discover_cases", "group_channel_files"]

logger = logging.getLogger("medt3d.inference.batch")


@dataclass
class Case:
    """One scan to predict.

    Attributes:
        name: case name, unique in the batch; output files start with it.
        path: the file or DICOM series folder (None when the input itself was unusable).
        input: the command-line input it came from.
        error: why the input could not become a case (then ``path`` is None).
        files: one file per channel, for a multi-channel case given as nnU-Net-style channel files
            (``path`` is then the first); None for a case in one file or folder.
    """

    name: str
    path: Path | None
    input: str
    error: str | None = None
    files: list[Path] | None = None

    @property
    def source(self) -> Path | list[Path] | None:
        """What the predictor reads: the channel files, or the one path."""
        return self.files or self.path


def _case_names(paths: Sequence[Path]) -> list[str]:
    """Output names: the file name without suffix (or the DICOM folder's name), made unique.

    Paths sharing a name are told apart by their folders below the deepest folder they share,
    e.g. ``a/ct.nii.gz`` and ``b/ct.nii.gz`` become ``a_ct`` and ``b_ct``.
    """
    names = [strip_suffix(p) for p in paths]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[name].append(i)
    for name, members in groups.items():
        if len(members) == 1:
            continue
        resolved = [paths[i].resolve() for i in members]
        common = Path(os.path.commonpath([str(p.parent) for p in resolved]))
        for i, path in zip(members, resolved):
            rel = path.parent.relative_to(common).parts
            names[i] = "_".join([*rel, name]) if rel else name
    seen: dict[str, int] = defaultdict(int)
    for i, name in enumerate(names):  # still equal (e.g. ct.nii and ct.nii.gz in one folder)
        seen[name] += 1
        if seen[name] > 1:
            names[i] = f"{name}_{seen[name]}"
    return names


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def discover_cases(inputs: Sequence[str | Path], output: str | Path) -> list[Case]:
    """Expand the inputs into cases; an input that is missing or unusable becomes a failed case.

    Files inside ``output`` found by searching a folder are left out (they are earlier results), and
    so are labels (see :func:`medt3d.data.case_names.is_label_path`): a dataset folder gives its images.
    The order is deterministic (sorted), the same on every rank.

    Raises:
        FileNotFoundError: an input does not exist (all missing ones are named).
        ValueError: ``output`` is an input folder or inside a DICOM input folder, or no inputs were given.
    """
    if not inputs:
        raise InputError("no inputs given; pass at least one scan file or DICOM folder")
    out = Path(output)
    missing = [str(text) for text in inputs if not Path(text).exists()]
    if missing:
        raise FileNotFoundError(f"input(s) not found: {', '.join(missing)}; nothing was segmented: check the "
                                "path(s) and run again")
    for text in inputs:
        path = Path(text)
        if path.is_dir() and out.resolve() == path.resolve():
            raise InputError(f"output folder {out} is the input folder {path}: the results would lie among the "
                             f"scans; choose another output folder, e.g. --output {path.resolve().parent}/"
                             f"{path.resolve().name}_seg")
    found: list[Path] = []
    failed: list[Case] = []
    for text in inputs:
        path = Path(text)
        try:
            cases = find_inputs([path], check=False)
        except (InputError, FileNotFoundError) as err:
            failed.append(Case(name=strip_suffix(path) or str(text), path=None, input=str(text), error=str(err)))
            continue
        if path.is_dir():
            cases = [c for c in cases if c == path or not _inside(c, out)]
            # a dataset folder holds masks beside its images: segment the images only
            labels = [c for c in cases if c != path and is_label_path(c, path)]
            if labels:
                logger.info("%s: leaving out %d label file(s) (in masks/labels folders or named *_label, *_seg, "
                            "*_mask), e.g. %s", path, len(labels), labels[0])
                cases = [c for c in cases if c not in labels]
        found.extend(cases)
    for case in found:
        if case.is_dir() and (_inside(out, case)):
            raise InputError(f"output folder {out} is inside the DICOM input folder {case}; "
                             "choose an output folder outside the inputs")
    unique = sorted({p.resolve(): p for p in found}.values(), key=lambda p: str(p.resolve()))
    cases = [Case(name=n, path=p, input=str(p)) for n, p in zip(_case_names(unique), unique)]
    return cases + failed


def group_channel_files(cases: Sequence[Case], channels: int) -> list[Case]:
    """Join nnU-Net-style channel files (``<case>_0000``, ``<case>_0001``...) into one case each.

    Only for a model with several input channels. A case must have exactly the files
    ``_0000`` to ``_{channels-1:04d}``; otherwise it fails with the reason. Other inputs (a 4-D
    file of channels, a DICOM folder) stay cases of their own.
    """
    if channels <= 1:
        return list(cases)
    groups: dict[tuple[Path, str], dict[int, Case]] = defaultdict(dict)
    out: list[Case] = []
    for case in cases:
        parts = channel_file(strip_suffix(case.path)) if case.path is not None and case.path.is_file() else None
        if parts is None:
            out.append(case)
            continue
        groups[(case.path.parent, parts[0])][parts[1]] = case
    for (_, name), members in sorted(groups.items(), key=lambda item: str(item[0])):
        ordered = [members[c] for c in sorted(members)]
        if sorted(members) != list(range(channels)):
            found = ", ".join(f"_{c:04d}" for c in sorted(members))
            out.append(Case(name=name, path=None, input=str(ordered[0].path), error=(
                f"case {name} in {ordered[0].path.parent}: channel files {found}, but the model takes {channels} "
                f"channels (_0000 to _{channels - 1:04d})")))
            continue
        out.append(Case(name=name, path=ordered[0].path, input=ordered[0].input,
                        files=[m.path for m in ordered if m.path is not None]))
    return sorted(out, key=lambda c: c.name)

def check_no_overwrite(cases: Sequence[Case], out_dir: Path) -> None:
    """Refuse outputs that would replace an input file or land inside a DICOM input folder."""
    inputs = {c.path.resolve() for c in cases if c.path is not None}
    for case in cases:
        for path in case_outputs(out_dir, case.name).values():
            resolved = path.resolve()
            if resolved in inputs:
                raise InputError(f"output {path} would overwrite the input {resolved}; choose another output folder")
            for other in inputs:
                if other.is_dir() and _inside(resolved, other):
                    raise InputError(f"output {path} would be written inside the DICOM input folder {other}; "
                                     "choose another output folder")
