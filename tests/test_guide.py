"""The user guide (``docs/``, ``mkdocs.yml``): it builds without a warning, and its commands run.

The convention (docs/index.md, "How this guide is tested"):

- every ``bash`` and ``python`` fenced block of a guide page runs, page by page in the order of the
  navigation, in one empty temporary folder (the pages are one walk-through: a later page uses what an
  earlier one wrote); each block starts in that folder, and a block that exits with an error fails;
- a block that cannot run there is preceded, on the line before its fence, by
  ``<!-- not run: REASON -->``, and the reason may not be empty;
- ``sh``, ``shell``, ``console``... blocks are refused, so that no command escapes the test by its
  language; ``yaml``, ``json`` and ``text`` blocks are file contents and output, not commands.

The blocks' ``medt3d`` is the warm client of tests/warm_cli.py (the same ``medt3d.cli.main`` on the
same arguments, in a process forked from one that imported MONAI once), which took the walk-through
from about 300 s to about 90 s; the installed console script is run on its own below.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from warm_cli import WarmMedt3d, unix_sockets_work

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"

#: fenced blocks that are commands: they run, or say why not
COMMAND_LANGUAGES = ("bash", "python")
#: other spellings of commands, refused so that every command is either run or marked
REFUSED_LANGUAGES = ("sh", "shell", "console", "zsh", "shell-session", "py", "python3", "pycon", "ipython")
#: pages in the navigation that are not part of the walk-through: measurement records whose commands
#: take minutes to hours on the real data of ../shared/data (the guide links them)
NOT_GUIDE_PAGES = ("benchmarks.md", "dicom_robustness.md")
#: the longest any one block may take
BLOCK_TIMEOUT_S = 300

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")


@dataclass
class Block:
    """One fenced block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    not_run: str | None  # the reason, when marked not run

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def _flatten(nav: list) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += _flatten(value)
        elif isinstance(value, str) and value.endswith(".md"):
            pages.append(value)
    return pages


def guide_pages() -> list[str]:
    """The guide's pages, in the order of the navigation of mkdocs.yml."""
    nav = yaml.safe_load(MKDOCS_YML.read_text())["nav"]
    return [page for page in _flatten(nav) if page not in NOT_GUIDE_PAGES]


def page_blocks(page: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a page, and the problems with its markers."""
    lines = (DOCS / page).read_text().splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            marker = _NOT_RUN.match(lines[i])
            if marker:  # a marker must sit right above a command block
                following = _FENCE.match(next((x for x in lines[i + 1:] if x.strip()), ""))
                info = following["info"].split() if following else []
                if not info or info[0] not in COMMAND_LANGUAGES:
                    problems.append(f"docs/{page}:{i + 1}: a 'not run' marker that is not followed by a bash or "
                                    "python block")
                elif not marker["reason"].strip():
                    problems.append(f"docs/{page}:{i + 1}: 'not run' without a reason")
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].split()
        language = info[0].lstrip(".").lower() if info else ""
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and not lines[i].strip().strip(fence[0])):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            problems.append(f"docs/{page}:{start + 1}: the block is never closed")
        i += 1
        previous = next((x for x in reversed(lines[:start]) if x.strip()), "")
        marker = _NOT_RUN.match(previous)
        blocks.append(Block(page, start + 1, language, "\n".join(body) + "\n",
                            marker["reason"].strip() if marker else None))
        if language in REFUSED_LANGUAGES:
            problems.append(f"docs/{page}:{start + 1}: a '{language}' block: write commands as bash or python "
                            "blocks, so that they run in the test or say why not")
        elif language in COMMAND_LANGUAGES and len(info) > 1:
            problems.append(f"docs/{page}:{start + 1}: '{' '.join(info)}': nothing may follow the language")
    return blocks, problems


def test_every_command_block_runs_or_says_why_not():
    pages = guide_pages()
    missing = [page for page in pages if not (DOCS / page).is_file() and page != "design.md"]
    assert not missing, f"pages in mkdocs.yml's nav that do not exist: {missing}"
    problems: list[str] = []
    runnable = 0
    for page in pages:
        if not (DOCS / page).is_file():
            continue
        blocks, page_problems = page_blocks(page)
        problems += page_problems
        runnable += sum(b.language in COMMAND_LANGUAGES and b.not_run is None for b in blocks)
    assert not problems, "\n".join(problems)
    assert runnable >= 10, f"only {runnable} runnable blocks found: is the parser still reading the pages?"


def test_the_convention_is_enforced(tmp_path: Path, monkeypatch):
    """The parser sees run and not-run blocks, and refuses other shells, empty reasons and stray markers."""
    (tmp_path / "page.md").write_text(
        "Text.\n\n```bash\nmedt3d --version\n```\n\n"
        "<!-- not run: needs a GPU -->\n```bash\nmedt3d train --device cuda\n```\n\n"
        "1. In a list:\n   ```python\n   print(1)\n   ```\n\n"
        "```yaml\ndata: {}\n```\n\n"
        "<!-- not run:   -->\n```bash\nfalse\n```\n\n"
        "```console\n$ medt3d demo\n```\n\n"
        "<!-- not run: a marker without a block -->\nText.\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "DOCS", tmp_path)
    blocks, problems = page_blocks("page.md")
    assert [(b.language, b.not_run) for b in blocks] == [
        ("bash", None), ("bash", "needs a GPU"), ("python", None), ("yaml", None), ("bash", ""), ("console", None)]
    assert blocks[2].code == "print(1)\n"
    assert len(problems) == 3, problems
    assert "without a reason" in problems[0] and "'console' block" in problems[1] and "not followed" in problems[2]


def test_the_guide_commands_run_in_order(tmp_path: Path):
    """Every runnable block of the guide, in order, in one folder; a failing block names its page and line."""
    env = dict(os.environ)
    # the medt3d and python of this environment, whatever PATH says
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    if not unix_sockets_work():
        pytest.skip("the warm medt3d of tests/warm_cli.py needs Unix sockets and fork")
    with WarmMedt3d(tmp_path.parent / f"{tmp_path.name}_warm", env) as warm:
        env["PATH"] = f"{warm.folder}{os.pathsep}{env['PATH']}"  # its medt3d client, first on PATH
        _run_the_guide(tmp_path, env)


def _run_the_guide(tmp_path: Path, env: dict[str, str]) -> None:
    # where, wall s, CPU s of the block's own processes (not of the warm server's children)
    timings: list[tuple[str, float, float]] = []
    for page in guide_pages():
        if not (DOCS / page).is_file():
            continue
        for block in page_blocks(page)[0]:
            if block.language not in COMMAND_LANGUAGES or block.not_run is not None:
                continue
            command = (["bash", "-euo", "pipefail", "-c", block.code] if block.language == "bash"
                       else [sys.executable, "-c", block.code])
            start, cpu = time.perf_counter(), _children_cpu()
            try:
                done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                      timeout=BLOCK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{block.where}: the block ran past {BLOCK_TIMEOUT_S} s:\n{block.code}")
            timings.append((block.where, time.perf_counter() - start, _children_cpu() - cpu))
            if done.returncode != 0:
                output = (done.stdout + done.stderr)[-4000:]
                pytest.fail(f"{block.where}: the guide's {block.language} block exited with {done.returncode}:\n"
                            f"{block.code}\n--- output (end) ---\n{output}")
    wall, cpu = sum(t[1] for t in timings), sum(t[2] for t in timings)
    print(f"\nguide: {len(timings)} blocks in {wall:.0f} s ({cpu:.0f} CPU s); slowest: "
          + ", ".join(f"{where} {w:.1f} s ({c:.1f} CPU s)" for where, w, c in sorted(timings, key=lambda t: -t[1])[:6]))


def test_the_installed_console_script_runs():
    """The walk-through's ``medt3d`` is the warm client of tests/warm_cli.py; this is the installed script."""
    script = Path(sys.executable).parent / "medt3d"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("medt3d "), done.stdout + done.stderr
    done = subprocess.run([str(script), "config", "show", "demo", "--set", "train.max_epochs=3"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "max_epochs: 3" in done.stdout, done.stdout + done.stderr


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_the_guide_builds_without_warnings(tmp_path: Path):
    """``mkdocs build --strict``: a broken link, a page missing from the nav or a docstring the API
    reference cannot render fails the build."""
    pytest.importorskip("mkdocs", reason="MkDocs is not installed: pip install -e '.[docs]' (.ci/run does)")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -e '.[docs]'")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(MKDOCS_YML),
                           "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{(done.stdout + done.stderr)[-4000:]}"
    for page in ("index.html", "install/index.html", "api/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("medt3d.predict", "medt3d.load_model", "medt3d.config.load_config", "medt3d.networks.MedT3D"):
        assert f'id="{name}"' in api, f"the API reference lacks {name}"
