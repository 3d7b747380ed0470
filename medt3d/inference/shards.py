"""A batch shared by many jobs (``medt3d infer --shard I/N``) and the cohort tables of an output folder.

Shard ``I`` of ``N`` takes the cases whose name hashes to ``I`` (SHA-1 of the case name modulo ``N``,
counted from 1): stable for a case whatever else the cohort holds, so ``N`` jobs given the same inputs
cover it exactly once. Each case's files are written atomically by the job that segments it; a job
then records its results in ``OUT_DIR/.medt3d-shards/shard-I-of-N.json`` and, under the folder's
merge lock, the job that finds all ``N`` records writes the cohort tables (``summary.json``,
``volumes.csv``, the viewers' label tables) from them and from the cases' sidecars. ``medt3d infer
--merge OUT_DIR`` writes them from the records there are (and names the missing shards).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medt3d.errors import EXIT_INTERRUPTED, InputError
from medt3d.inference.outputs import case_outputs
from medt3d.inference.statistics import VOLUMES_NAME, volume_table
from medt3d.inference.viewer_tables import ITKSNAP_NAME, SLICER_NAME, itksnap_labels, slicer_color_table
from medt3d.io_utils import atomic_write_text
from medt3d.locks import merge_lock

__all__ = ["SHARDS_DIR", "SUMMARY_NAME", "merge_folder", "parse_shard", "select_shard", "shard_of", "summarize",
           "write_cohort"]

logger = logging.getLogger("medt3d.inference.batch")

SUMMARY_NAME = "summary.json"
#: hidden folder of the shards' result records in an output folder
SHARDS_DIR = ".medt3d-shards"
_RECORD = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")
#: exit codes of a batch: all cases done (or skipped), or at least one failed
EXIT_OK, EXIT_FAILED = 0, 1


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)`` with ``1 <= I <= N``.

    Raises:
        ValueError: anything else, with an example.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    index, count = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or count < 1 or not 1 <= index <= count:
        raise InputError(f"--shard {text!r}: give I/N with 1 <= I <= N, e.g. --shard 1/4 ... --shard 4/4 "
                         "(shards count from 1; for a scheduler array from 0, pass $((TASK_ID+1))/N)")
    return index, count


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) that case ``name`` belongs to."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:12], 16) % count + 1


def select_shard(cases: Sequence[Any], shard: tuple[int, int] | None) -> list[Any]:
    """The cases (anything with ``.name``) of ``shard``; all of them for ``None``."""
    if shard is None:
        return list(cases)
    index, count = shard
    return [c for c in cases if shard_of(c.name, count) == index]


def summarize(results: Sequence[dict[str, Any]], model: dict[str, Any], output: Path, settings: dict[str, Any],
              world_size: int, not_run: Sequence[str] = (), shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """The summary of a batch from its case results (``CaseResult`` as dicts), sorted by case."""
    results = sorted(results, key=lambda r: r["case"])
    failed = [r for r in results if r["status"] == "failed"]
    interrupted = bool(not_run)
    summary: dict[str, Any] = {
        "model": model,
        "output": str(Path(output).resolve()),
        "n_cases": len(results) + len(not_run),
        "done": sum(r["status"] == "done" for r in results),
        "skipped": sum(r["status"] == "skipped" for r in results),
        "n_failed": len(failed),
        "failed": [{"case": r["case"], "input": r["input"], "error": r["error"]} for r in failed],
        "failed_outputs": [{"case": r["case"], "output": kind, "error": error}
                           for r in results for kind, error in (r.get("failed_outputs") or {}).items()],
        "exit_code": EXIT_INTERRUPTED if interrupted else EXIT_FAILED if failed else EXIT_OK,
        "inference": settings,
        "world_size": world_size,
        "cases": list(results),
    }
    if interrupted:
        summary.update(interrupted=True, not_run=sorted(not_run))
    if shard is not None:
        summary["shard"] = list(shard)
    return summary


def _record_path(out_dir: Path, shard: tuple[int, int]) -> Path:
    return out_dir / SHARDS_DIR / f"shard-{shard[0]}-of-{shard[1]}.json"


def _batch_key(record: dict[str, Any]) -> tuple[Any, Any]:
    """What makes shard records one batch: the same cohort (every case name) and the same model weights."""
    return record.get("cohort"), record.get("model", {}).get("sha256")


def _records(out_dir: Path, key: tuple[Any, Any] | None = None) -> dict[int, dict[int, Path]]:
    """The shards' records in ``out_dir``, by shard count then index; with ``key``, only that batch's
    (a record left by an earlier batch into the same folder, of other cases or another model, is not merged)."""
    found: dict[int, dict[int, Path]] = {}
    folder = out_dir / SHARDS_DIR
    for path in sorted(folder.glob("shard-*-of-*.json")) if folder.is_dir() else []:
        match = _RECORD.match(path.name)
        if match and (key is None or _batch_key(json.loads(path.read_text())) == key):
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
    return found


def _write_tables(out_dir: Path, summary: dict[str, Any]) -> None:
    """``volumes.csv`` and the viewers' label tables from the finished cases' sidecars, then ``summary.json``."""
    finished = [case_outputs(out_dir, r["case"])["sidecar"] for r in summary["cases"]
                if r["status"] in ("done", "skipped")]
    finished = sorted(p for p in finished if p.is_file())
    if finished:
        atomic_write_text(out_dir / VOLUMES_NAME, volume_table(finished))
        table = json.loads(finished[0].read_text()).get("labels") or []
        atomic_write_text(out_dir / ITKSNAP_NAME, itksnap_labels(table))  # names and colours for viewers
        atomic_write_text(out_dir / SLICER_NAME, slicer_color_table(table))
    atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2))


def _merged(out_dir: Path, count: int, records: dict[int, Path]) -> dict[str, Any]:
    parts = [json.loads(records[i].read_text()) for i in sorted(records)]
    first = parts[0]
    hashes = {json.dumps(p.get("model", {}).get("sha256")) for p in parts}
    if len(hashes) > 1:
        logger.warning("%s: the shards were segmented by different models (sha256 %s)", out_dir, sorted(hashes))
    summary = summarize([c for p in parts for c in p["cases"]], first["model"], out_dir, first["inference"],
                        first.get("world_size", 1), not_run=[n for p in parts for n in p.get("not_run", [])])
    missing = [i for i in range(1, count + 1) if i not in records]
    summary["shards"] = {"count": count, "merged": sorted(records), "missing": missing}
    if missing and summary["exit_code"] == EXIT_OK:
        summary["exit_code"] = EXIT_FAILED  # a cohort with shards not run is not done
    return summary


def write_cohort(out_dir: Path, summary: dict[str, Any], shard: tuple[int, int] | None,
                 cohort: Sequence[str] = ()) -> dict[str, Any]:
    """Write this job's results: the cohort tables for a whole batch (whose job holds the folder's lock);
    for a shard its record, and the cohort tables merged from every shard's record once all ``N`` are
    there (under the merge lock). ``cohort`` names every case of the batch, all shards together: records
    of another cohort or model are not merged.

    Returns:
        The summary written to ``summary.json`` (merged), or this shard's own while shards are missing.
    """
    if shard is None:  # the job holds the whole folder's lock: no other writer
        _write_tables(out_dir, summary)
        return summary
    with merge_lock(out_dir):
        record = {**summary, "cohort": sorted(cohort)}
        atomic_write_text(_record_path(out_dir, shard), json.dumps(record, indent=2))
        records = _records(out_dir, _batch_key(record)).get(shard[1], {})
        missing = [i for i in range(1, shard[1] + 1) if i not in records]
        if missing:
            logger.info("shard %d/%d done; shards %s of %s not finished yet: the last one (or medt3d infer --merge "
                        "%s) writes %s", shard[0], shard[1], missing, shard[1], out_dir, SUMMARY_NAME)
            return summary
        merged = _merged(out_dir, shard[1], records)
        _write_tables(out_dir, merged)
        logger.info("all %d shards done: merged %s (%d cases)", shard[1], out_dir / SUMMARY_NAME, merged["n_cases"])
        return merged


def merge_folder(out_dir: str | Path) -> dict[str, Any]:
    """``medt3d infer --merge OUT_DIR``: the cohort tables from the shards' records there are.

    Raises:
        FileNotFoundError: no shard records in ``out_dir``.
        ValueError: records of several shard counts (two different batches in one folder).
    """
    out_dir = Path(out_dir)
    newest = max((out_dir / SHARDS_DIR).glob("shard-*-of-*.json"), key=lambda p: p.stat().st_mtime, default=None)
    records = _records(out_dir, _batch_key(json.loads(newest.read_text()))) if newest is not None else {}
    if not records:
        raise FileNotFoundError(f"{out_dir}: no shard records in {out_dir / SHARDS_DIR}; run medt3d infer --shard I/N "
                                "into it first (an unsharded run writes its summary itself)")
    if len(records) > 1:
        raise InputError(f"{out_dir} holds records of {sorted(records)} shards (two batches split differently): "
                         f"delete the stale ones in {out_dir / SHARDS_DIR} and merge again")
    count, found = next(iter(records.items()))
    with merge_lock(out_dir):
        merged = _merged(out_dir, count, found)
        _write_tables(out_dir, merged)
    if merged["shards"]["missing"]:
        logger.warning("%s: shards %s of %d have not finished; merged the others", out_dir,
                       merged["shards"]["missing"], count)
    return merged
