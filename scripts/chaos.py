"""Chaos run: faults during ``medt3d train``, ``infer`` and ``export`` on phantoms (issue 35, item 6).

For each command and each fault -- ``kill -9``, SIGTERM, a full disk, a read-only output -- the script
starts the command (demo config, tiny settings) as a subprocess, injects the fault, and then checks:

- nothing half-written lies under a final name: every checkpoint, history, config, label, sidecar,
  summary, table and bundle that exists under its final name reads back whole;
- a rerun (``train --resume``, ``infer --skip-existing``, ``export`` to the same folder) completes;
- every finished output is intact (and, after the rerun, every case, epoch and bundle is there).

The full disk is a small tmpfs mounted for the run, filled by a filler file; the read-only output is a
read-only bind mount of the output folder onto itself (both need root and ``mount``; without them those
rows are skipped). The fault comes once the command has written something (``train``: its first
checkpoint; ``infer``: its first case), or before it starts for ``export``, which takes under two
seconds. Prints one JSON table.

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/chaos.py [--workdir DIR] [--keep]

Not part of the test suite (about 3-5 minutes on two CPU cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TINY = ["preprocess.spacing=[3.0,3.0,3.0]", "patch.roi_size=[16,16,16]", "patch.num_samples=1",
        "network.preset=tiny", "train.batch_size=1", "train.max_seconds=null", "train.iterations_per_epoch=null",
        "train.val_interval=1", "train.warmup_epochs=1", "train.lr=0.003", "data.cache=memory",
        "infer.sw_batch_size=2", "tracking.tensorboard=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FAULTS = ("kill9", "sigterm", "full_disk", "read_only")
EXPECTED_EXIT = {"kill9": -9, "sigterm": 130, "full_disk": 3, "read_only": 3}


def medt3d(*args: str) -> list[str]:
    return [sys.executable, "-m", "medt3d", *args]


def sets(*items: str) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# --------------------------------------------------------------------------- disks


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int):
    """A tmpfs of ``size_mb`` at ``path`` (unmounted afterwards)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave_kb: int = 0) -> None:
    """Fill ``disk`` up to ``leave_kb`` free with ``disk/.filler``."""
    free = shutil.disk_usage(disk).free - leave_kb * 1024
    chunk = b"\0" * (1 << 20)
    with contextlib.suppress(OSError), open(disk / ".filler", "wb") as f:
        while free > 0:
            f.write(chunk[: min(len(chunk), free)])
            free -= len(chunk)
        f.flush()


def set_read_only(folder: Path, read_only: bool) -> None:
    """Make ``folder`` read-only by a read-only bind mount of it onto itself, or undo that.

    A remount of the whole disk read-only is refused while the command holds files open for writing
    ("mount point is busy"); the bind mount turns every later open through the path read-only (EROFS),
    which is what a command meets when its disk goes read-only.
    """
    if read_only:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
    else:
        subprocess.run(["umount", str(folder)], check=True)


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(tempfile.mkdtemp(prefix="chaos-probe-"))
    try:
        with small_disk(probe, 1):
            return True
    except (subprocess.CalledProcessError, OSError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


# --------------------------------------------------------------------------- checks of what is on disk


def check_train(run_dir: Path, complete_epochs: int | None = None) -> list[str]:
    """Problems with a run folder's files under their final names."""
    import yaml

    from medt3d.models.checkpoint import load_checkpoint

    problems = []
    for ckpt in sorted((run_dir / "checkpoints").glob("*.pt")):
        try:
            epoch = load_checkpoint(ckpt)["epoch"]
            if complete_epochs is not None and ckpt.name == "last.pt" and epoch != complete_epochs:
                problems.append(f"{ckpt.name}: epoch {epoch}, expected {complete_epochs}")
        except Exception as err:  # noqa: BLE001 - a report, not a program
            problems.append(f"{ckpt.name}: {err}")
    for name, parse in (("history.json", json.loads), ("config.yaml", yaml.safe_load)):
        path = run_dir / name
        if path.exists():
            try:
                parse(path.read_text())
            except Exception as err:  # noqa: BLE001
                problems.append(f"{name}: {err}")
    if complete_epochs is not None and not (run_dir / "checkpoints" / "last.pt").is_file():
        problems.append("no last.pt")
    return problems


def check_infer(out: Path, cases: list[str] | None = None) -> list[str]:
    """Problems with an output folder: a final-named file that does not read back, a label without sidecar."""
    import nibabel as nib

    problems = []
    for label in sorted(out.glob("*_seg.nii.gz")):
        try:
            nib.load(label).get_fdata()
        except Exception as err:  # noqa: BLE001
            problems.append(f"{label.name}: {err}")
        if not label.with_name(label.name.replace(".nii.gz", ".json")).is_file():
            problems.append(f"{label.name}: no sidecar")
    for sidecar in [*out.glob("*_seg.json"), *out.glob("summary.json")]:
        try:
            json.loads(sidecar.read_text())
        except Exception as err:  # noqa: BLE001
            problems.append(f"{sidecar.name}: {err}")
    if cases is not None:
        missing = [c for c in cases if not (out / f"{c}_seg.json").is_file()]
        problems += [f"case {c}: not done" for c in missing]
        try:
            summary = json.loads((out / "summary.json").read_text())
            if summary["exit_code"] != 0:
                problems.append(f"summary exit_code {summary['exit_code']}")
        except (OSError, ValueError, KeyError) as err:
            problems.append(f"summary.json: {err}")
    return problems


def check_export(bundle: Path, complete: bool = False) -> list[str]:
    """Problems with a bundle under its final name (absent is fine unless ``complete``)."""
    if not bundle.exists():
        return ["no bundle"] if complete else []
    try:
        from medt3d.models.loading import load_model

        load_model(bundle)
    except Exception as err:  # noqa: BLE001
        return [f"{bundle.name}: {err}"]
    partials = list(bundle.parent.glob(f".{bundle.name}.partial.*"))
    return [f"partial left: {p.name}" for p in partials] if complete else []


def hidden_left(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".medt3d-shards" not in p.parts
                  and p.name not in (".filler", ".medt3d.merge.lock"))


# --------------------------------------------------------------------------- one scenario


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen, seconds: float = 240) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return True
        time.sleep(0.02)
    return ready()


def _command(op: str, target_root: Path, env: dict[str, Any]) -> tuple[Path, list[str], Callable[[], bool]]:
    """The command of ``op``, its output folder, and a check that it has got far enough to be hit."""
    if op == "train":
        out = target_root / "run"
        cmd = medt3d("train", "--config", "demo", "--data-dir", str(env["data"]), "--output", str(out),
                     *sets(*TINY, "tracking.mlflow=true", "train.max_epochs=40"))
        return out, cmd, (out / "checkpoints" / "last.pt").exists
    if op == "infer":
        out = target_root / "preds"
        cmd = medt3d("infer", str(env["cohort"]), "--model", str(env["model"]), "--output", str(out),
                     "--no-progress", "--tta", "--roi-size", "8", "8", "8", "--overlap", "0.75")
        return out, cmd, lambda: any(out.glob("*_seg.json"))
    out = target_root / "bundle"
    cmd = medt3d("export", "--model", str(env["model"]), "--output", str(out))
    return out, cmd, lambda: any(target_root.glob(".bundle.partial.*"))


def _inject(fault: str, proc: subprocess.Popen, disk: Path, out: Path) -> None:
    """The fault, on a command still running."""
    if fault == "kill9":
        proc.send_signal(signal.SIGKILL)
    elif fault == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif fault == "full_disk":
        fill(disk)
    else:
        set_read_only(out, True)


def _check(op: str, out: Path) -> list[str]:
    """What is under a final name must read back whole: the problems found, if any."""
    if op == "train":
        return check_train(out)
    if op == "infer":
        return check_infer(out)
    return check_export(out)


def _rerun(op: str, cmd: list[str], out: Path, env: dict[str, Any]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The command again, on the repaired disk (train resumes or starts over), and what is wrong after it."""
    if op == "train":
        done = 0
        with contextlib.suppress(Exception):
            from medt3d.models.checkpoint import load_checkpoint

            done = load_checkpoint(out / "checkpoints" / "last.pt")["epoch"]
        target = done + 1
        again = (cmd[:-2] + ["--set", f"train.max_epochs={target}", "--resume"] if done else
                 cmd[:-2] + ["--set", "train.max_epochs=1", "--overwrite"])
        return run(again), check_train(out, complete_epochs=target if done else 1)
    if op == "infer":
        return run(cmd + ["--skip-existing"]), check_infer(out, env["cases"])
    return run(cmd), check_export(out, complete=True)


def scenario(op: str, fault: str, base: Path, env: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    disk = base / "disk"
    row: dict[str, Any] = {"command": op, "fault": fault, "expected_exit": EXPECTED_EXIT[fault]}
    mounted = fault == "full_disk"
    stack = contextlib.ExitStack()
    if mounted:
        stack.enter_context(small_disk(disk, 256 if op == "train" else 16))
    target_root = disk if mounted else base / "out"
    target_root.mkdir(parents=True, exist_ok=True)
    with stack:
        out, cmd, ready = _command(op, target_root, env)
        # export takes under two seconds: a full or read-only disk comes before it starts
        pre = op == "export" and fault in ("full_disk", "read_only")
        if pre:
            fill(disk, leave_kb=64) if fault == "full_disk" else set_read_only(target_root, True)
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        caught = pre or wait_for(ready, proc)
        row["fault_at"] = "before start" if pre else ("while running" if proc.poll() is None and caught
                                                      else "after it ended")
        if not pre and proc.poll() is None:
            _inject(fault, proc, disk, out)
        try:
            log, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
        (base / "log.txt").write_text(log)
        row["exit"] = proc.returncode
        row["message"] = last_line(log)
        row["traceback"] = "Traceback" in log
        half = _check(op, out)
        row["half_written"] = half
        # the rerun, with the disk repaired
        if fault == "read_only":
            set_read_only(target_root if pre else out, False)
        if mounted:
            with contextlib.suppress(FileNotFoundError):
                (disk / ".filler").unlink()
        rerun, intact = _rerun(op, cmd, out, env)
        row["rerun_exit"] = rerun.returncode
        row["rerun_message"] = last_line(rerun.stdout + rerun.stderr)
        row["after_rerun"] = intact
        row["hidden_left"] = hidden_left(out if op != "export" else target_root)
    row["ok"] = (row["exit"] == row["expected_exit"] and not row["traceback"] and not half
                 and row["rerun_exit"] == 0 and not intact)
    row["seconds"] = round(time.time() - start, 1)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to work (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--only", nargs="*", default=[], help="COMMAND:FAULT pairs to run (default: all)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medt3d-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    from medt3d.data.phantoms import write_phantom_dataset

    data = write_phantom_dataset(work / "data", n_train=2, n_val=1, shape=(32, 32, 20))
    cohort = write_phantom_dataset(work / "cohort", n_train=4, n_val=0, shape=(32, 32, 20)) / "train" / "images"
    base_run = work / "model"
    made = run(medt3d("train", "--config", "demo", "--data-dir", str(data), "--output", str(base_run),
                      *sets(*TINY, "tracking.mlflow=false", "train.max_epochs=1", "train.val_interval=0")))
    if made.returncode != 0:
        print(made.stdout + made.stderr, file=sys.stderr)
        return 1
    env = {"data": data, "cohort": cohort, "model": base_run / "checkpoints" / "last.pt",
           "cases": sorted(p.name[: -len(".nii.gz")] for p in cohort.glob("*.nii.gz"))}
    mount_ok = can_mount()
    rows = []
    for op in ("train", "infer", "export"):
        for fault in FAULTS:
            if args.only and f"{op}:{fault}" not in args.only:
                continue
            if fault in ("full_disk", "read_only") and not mount_ok:
                rows.append({"command": op, "fault": fault, "skipped": "needs root and mount (a tmpfs)"})
                continue
            base = work / f"{op}-{fault}"
            base.mkdir(parents=True, exist_ok=True)
            try:
                rows.append(scenario(op, fault, base, env))
            except Exception as err:  # noqa: BLE001 - the script's own failure is a row too
                rows.append({"command": op, "fault": fault, "ok": False, "script_error": f"{type(err).__name__}: {err}"})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"disk": ("full: a tmpfs (256 MiB for train, 16 MiB otherwise) filled by a file; read-only: a read-only "
                              "bind mount of the output folder") if mount_ok else None,
                      "all_ok": all(r.get("ok", True) for r in rows), "rows": rows}, indent=1))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.get("ok", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
