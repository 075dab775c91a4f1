"""Every fenced code block of README.md and docs/ runs as written.

``python`` blocks are executed, each in a fresh temporary directory. ``bash`` blocks are checked line by line:
``resnetkit`` commands parse with the real command-line parser and the cheap ones (help, ``weights``, ``models
PATTERN``) run and must exit 0; other programs follow a cheaper rule each (see ``RULES``). ``text`` blocks are not
code. A block in any other language, or none, fails: say what it is, so that it is checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from resnetkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)
LANGUAGES = {"python", "bash", "text"}
OFFLINE_SKIP = "# Downloads weights"  # a block that starts so needs the network, which tests never have
MAX_OFFLINE_SKIPS = 2
README_MAX_BYTES = 10 * 1024  # the README sells and starts; the docs teach


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # where the fence opens
    language: str
    code: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page that open at the start of a line (``test_every_block_is_found_and_known``)."""
    text = page.read_text()
    name = page.relative_to(ROOT).as_posix()
    return [Block(name, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def shell_commands(block: Block) -> list[list[str]]:
    """The command lines of a shell block as argv lists: continuations joined, comments and blank lines dropped."""
    joined = block.code.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def distinct_commands(blocks: list[Block]) -> dict[tuple[str, ...], Block]:
    """Each command line of the shell blocks, with the first block that shows it: one test per distinct line."""
    commands: dict[tuple[str, ...], Block] = {}
    for block in (b for b in blocks if b.language == "bash"):
        for argv in shell_commands(block):
            commands.setdefault(tuple(argv), block)
    return commands


BLOCKS = [block for page in PAGES for block in read_blocks(page)]
PYTHON = [b for b in BLOCKS if b.language == "python"]
COMMANDS = distinct_commands(BLOCKS)


# -- python ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", PYTHON, ids=str)
def test_python_block_runs(block, tmp_path, monkeypatch):
    if block.code.startswith(OFFLINE_SKIP):
        pytest.skip("needs the network")
    monkeypatch.chdir(tmp_path)  # blocks may write run folders and exported files
    exec(compile(block.code, f"{block} (python block)", "exec"), {"__name__": "__docs__"})


def test_few_blocks_need_the_network():
    skipped = [str(b) for b in PYTHON if b.code.startswith(OFFLINE_SKIP)]
    assert len(skipped) <= MAX_OFFLINE_SKIPS, f"blocks the tests cannot run: {skipped}"


# -- shell -----------------------------------------------------------------------------------------------------------


def check_resnetkit(args: list[str], tmp_path: Path) -> None:
    """The real parser accepts the line; the cheap ones run and exit 0."""
    namespace = parse_resnetkit(args)
    if namespace is None or is_cheap(namespace):
        command = [sys.executable, "-m", "resnetkit", *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300)
        assert run.returncode == 0, f"`resnetkit {shlex.join(args)}` exited {run.returncode}:\n{run.stderr[-2000:]}"


def parse_resnetkit(args: list[str]) -> argparse.Namespace | None:
    """The parsed line, or None for a help request; overrides may follow the flags, as ``resnetkit`` allows."""
    try:
        namespace, extra = build_parser().parse_known_args(args)
    except SystemExit as exit:  # argparse reports a bad line, and answers -h, by exiting
        assert exit.code == 0, f"`resnetkit {shlex.join(args)}` does not parse"
        return None
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(namespace, "overrides")]
    assert not stray, f"`resnetkit {shlex.join(args)}`: the parser does not take {stray}"
    return namespace


def is_cheap(namespace: argparse.Namespace) -> bool:
    """Needs no data, no download and no training: the help, the weights registry, a few models (all: ~20 s)."""
    if namespace.command in (None, "weights"):
        return True
    return namespace.command == "models" and namespace.pattern != "*"


def check_torchrun(args: list[str], tmp_path: Path) -> None:
    """``torchrun ... -m resnetkit ARGS`` is a resnetkit line; a script must exist."""
    if "-m" in args:
        module, rest = args[args.index("-m") + 1], args[args.index("-m") + 2 :]
        assert module == "resnetkit", f"torchrun -m {module}: only resnetkit is checked"
        check_resnetkit(rest, tmp_path)
    else:
        script = next(a for a in args if not a.startswith("-"))
        assert (ROOT / script).is_file(), f"torchrun: no script {script}"


def check_python(args: list[str], tmp_path: Path) -> None:
    """``python -m resnetkit ARGS`` is a resnetkit line, another module must import, a script must exist."""
    if args[:2] == ["-m", "resnetkit"]:
        check_resnetkit(args[2:], tmp_path)
    elif args[0] == "-m":
        assert importlib.util.find_spec(args[1]), f"python -m {args[1]}: no such module"
    else:
        assert (ROOT / args[0]).is_file(), f"python {args[0]}: no such script"  # experiments and bench take data


def check_make(args: list[str], tmp_path: Path) -> None:
    """Every target is one the Makefile defines (``VAR=value`` arguments aside)."""
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    for target in (a for a in args if "=" not in a):
        assert target in targets, f"make {target}: no such target in the Makefile"


def check_pip(args: list[str], tmp_path: Path) -> None:
    """Every extra of a ``.[a,b]`` requirement is one pyproject.toml defines."""
    text = (ROOT / "pyproject.toml").read_text()  # read by hand: tomllib is Python 3.11+, the package 3.10+
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+)\s*=", section, flags=re.MULTILINE))
    for spec in (m.group(1) for a in args if (m := re.fullmatch(r"\.\[(.+)\]", a))):
        unknown = set(spec.split(",")) - extras
        assert not unknown, f"pip install .[{spec}]: pyproject.toml defines no extra {sorted(unknown)}"


def check_mkdocs(args: list[str], tmp_path: Path) -> None:
    assert args[0] in {"build", "serve"}, f"mkdocs {args[0]}: not a command these docs expect"


RULES: dict[str, Callable[[list[str], Path], None]] = {
    "resnetkit": check_resnetkit,
    "torchrun": check_torchrun,
    "python": check_python,
    "make": check_make,
    "pip": check_pip,
    "mkdocs": check_mkdocs,
}


@pytest.mark.parametrize("argv", list(COMMANDS), ids=lambda argv: f"{COMMANDS[argv]} {shlex.join(argv)[:60]}")
def test_shell_command(argv, tmp_path):
    program = Path(argv[0]).name  # .venv/bin/python is python
    assert program in RULES, f"{COMMANDS[argv]}: no rule checks `{program}` lines; add one to RULES"
    RULES[program](list(argv[1:]), tmp_path)


# -- the blocks themselves -------------------------------------------------------------------------------------------


def test_every_block_is_found_and_known():
    for page in PAGES:
        fences = sum(1 for line in page.read_text().splitlines() if line.lstrip().startswith("```"))
        blocks = read_blocks(page)
        assert fences == 2 * len(blocks), f"{page.name}: a fence this test does not read (indented or unclosed?)"
        for block in blocks:
            assert block.language in LANGUAGES, f"{block}: language {block.language!r}, not one of {LANGUAGES}"
    assert len(PYTHON) >= 10 and len(COMMANDS) >= 20


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move the detail into docs/"
