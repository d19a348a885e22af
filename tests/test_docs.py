"""The documentation stays true: links resolve, no machine paths or notes of our own work, and every command line
in a code block parses (hippo-peft against its parser, nnU-Net's commands against their -h). Also `hippo-peft
COMMAND -h` itself: a description, the defaults, no notes meant for developers."""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
import urllib.parse
from functools import lru_cache
from pathlib import Path

import pytest

from hippo_peft.cli import build_parser
from tests.conftest import REPO

# files where machine paths and "issue N" are the point: the project's own record, and reports a benchmark wrote
RECORD_FILES = ("docs/contributing.md", "docs/changelog.md", "docs/evidence_record.md")
RECORD_FOLDERS = ("docs/record/", "docs/benchmark/")

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_SRC = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
FORBIDDEN = {"../shared": re.compile(r"\.\./shared"),
             "an absolute machine path": re.compile(r"(?<![\w.~])/(work|tmp|root|home)/"),
             "a note of our own work (issue N)": re.compile(r"\bissue\s*#?\s*[0-9]", re.I)}
SHELL_BLOCKS = ("", "bash", "sh", "shell", "console", "zsh")
SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECT = re.compile(r"^\d*(>>?|<)(&\d+)?")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


def doc_files(root: Path = REPO) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def rel(path: Path, root: Path = REPO) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def split_fences(text: str):
    """(prose lines, code blocks): prose as (line number, line) with fenced blocks blanked; blocks as (language,
    [(line number, line)])."""
    prose, blocks, block, fence = [], [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, block = m.group(2), (m.group(3).lower(), [])
            blocks.append(block)
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            fence = None
        elif fence is not None:
            block[1].append((number, line))
        else:
            prose.append((number, line))
    return prose, blocks


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link and image of a Markdown file, #anchor parts stripped."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for number, line in prose:
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for pattern in (MD_LINK, REF_LINK, HTML_SRC):
            for m in pattern.finditer(line):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "//")):
                    continue  # http(s), mailto, ... and anchors inside the page
                target = urllib.parse.unquote(target.split("#", 1)[0].split("?", 1)[0])
                if target:
                    found.append((number, target))
    return found


def broken_links(files: list[Path], root: Path = REPO) -> list[str]:
    return [f"{rel(path, root)}:{number}: {target}" for path in files for number, target in relative_links(path)
            if not (root / target.lstrip("/") if target.startswith("/") else path.parent / target).exists()]


def is_record(path: Path, root: Path = REPO) -> bool:
    name = rel(path, root)
    return name in RECORD_FILES or name.startswith(RECORD_FOLDERS)


def forbidden_lines(files: list[Path], root: Path = REPO) -> list[str]:
    return [f"{rel(path, root)}:{number}: {what}: {line.strip()}"
            for path in files if not is_record(path, root)
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            for what, pattern in FORBIDDEN.items() if pattern.search(line)]


def command_lines(path: Path) -> list[tuple[int, str]]:
    """Shell lines of a file's fenced code blocks: continuation lines joined, `$ ` prompts stripped (in console
    blocks only the prompted lines are commands, the rest is output)."""
    _, blocks = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for language, lines in blocks:
        if language not in SHELL_BLOCKS:
            continue
        pending, start = "", 0
        for number, line in lines:
            if not pending:
                start = number
                stripped = line.strip()
                prompted = re.match(r"^[$%#>]\s+", stripped) if language == "console" else re.match(r"^\$\s+",
                                                                                                     stripped)
                if language == "console" and not prompted:
                    continue
                line = stripped[prompted.end():] if prompted else stripped
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            found.append((start, (pending + line).strip()))
            pending = ""
    return found


def commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line: shlex tokens, comments dropped, split at pipes, &&, ; and &, without
    redirections, leading VAR=value assignments, `time`/`nohup`, and a folder before the program name."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = []
    for token in lexer:  # `a; b` and `a;b`: the separator as its own token
        tokens += [t for t in re.split(r"(;|&&|\|\|)$", token) if t] if token not in SEPARATORS else [token]
    result, current = [], []
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token in SEPARATORS:
            result.append(current)
            current = []
            continue
        redirect = REDIRECT.match(token)
        if redirect and not token.lstrip("-").isdigit():
            skip_next = redirect.end() == len(token) and not redirect.group(2)  # `> file`: drop the target too
            continue
        if not current and (ENV_ASSIGNMENT.match(token) or token in ("time", "nohup", "env", "exec")):
            continue
        current.append(token)
    result.append(current)
    return [[Path(c[0]).name, *c[1:]] for c in result if c]


def hippo_peft_problems(files: list[Path], root: Path = REPO) -> list[str]:
    """Every `hippo-peft ...` of the code blocks, parsed with the real parser: its error message per bad line."""
    parser, problems = build_parser(), []
    for command in [parser, *subcommands(parser).values()]:
        command.allow_abbrev = False  # the docs spell flags out: --remove-small-component is a typo, not a prefix
    for path in files:
        for number, line in command_lines(path):
            try:
                cmds = commands(line)
            except ValueError as e:  # unbalanced quotes
                problems.append(f"{rel(path, root)}:{number}: {line}\n    shlex: {e}")
                continue
            for argv in cmds:
                if argv[0] != "hippo-peft" or (len(argv) > 1 and argv[1].endswith(":")):  # printed output
                    continue
                err = io.StringIO()
                try:
                    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                        parser.parse_args(argv[1:])
                except SystemExit as e:
                    if e.code:
                        message = err.getvalue().strip().splitlines()[-1:] or [f"exit {e.code}"]
                        problems.append(f"{rel(path, root)}:{number}: {line}\n    {message[0]}")
    return problems


def test_relative_links_resolve():
    assert broken_links(doc_files()) == []


def test_no_machine_paths_or_work_notes_in_the_docs():
    assert forbidden_lines(doc_files()) == []


def test_hippo_peft_command_lines_parse():
    files = doc_files()
    assert sum(argv[0] == "hippo-peft" for p in files for _, l in command_lines(p) for argv in commands(l)) >= 5
    problems = hippo_peft_problems(files)
    assert not problems, "command lines the parser refuses:\n" + "\n".join(problems)


@lru_cache(maxsize=None)
def nnunet_flags(command: str) -> frozenset[str] | str:
    """The flags `command -h` lists, or its error output when it has no -h (no such command)."""
    program = Path(sys.executable).parent / command
    if not program.exists():
        return f"{command}: no such command in {program.parent}"
    proc = subprocess.run([str(program), "-h"], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        return f"{command} -h failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", proc.stdout))


def nnunet_problems(files: list[Path], root: Path = REPO) -> list[str]:
    problems = []
    for path in files:
        for number, line in command_lines(path):
            for argv in commands(line):
                if not argv[0].startswith("nnUNetv2_"):
                    continue
                flags = nnunet_flags(argv[0])
                if isinstance(flags, str):
                    problems.append(f"{rel(path, root)}:{number}: {line}\n    {flags}")
                    continue
                unknown = [t for t in argv[1:] if re.match(r"^--?[A-Za-z]", t) and t.split("=")[0] not in flags]
                if unknown:
                    problems.append(f"{rel(path, root)}:{number}: {line}\n    {argv[0]} -h lists no "
                                    f"{', '.join(unknown)}")
    return problems


@pytest.mark.e2e
@pytest.mark.slow
def test_nnunet_command_lines_use_flags_their_help_lists(tmp_path):
    problems = nnunet_problems(doc_files())
    assert not problems, "nnU-Net command lines with flags their -h does not list:\n" + "\n".join(problems)
    # the check catches a misspelt flag and a command nnU-Net does not have (the -h output is cached)
    made_up = tmp_path / "made_up.md"
    made_up.write_text("```bash\nnnUNetv2_train 4 3d_fullres 0 -tr T -pretrained_weight W -device cpu\n"
                       "nnUNetv2_trian 4 3d_fullres 0\n```\n")
    problems = nnunet_problems([made_up], tmp_path)
    assert len(problems) == 2 and problems[0].endswith("nnUNetv2_train -h lists no -pretrained_weight"), problems
    assert "nnUNetv2_trian: no such command" in problems[1]


# --- the checks themselves catch what they are for (on a made-up docs tree) -----------------------------------

def test_the_checks_catch_a_renamed_flag_a_broken_link_and_a_machine_path(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("x")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [there](docs/there.md#usage), [gone](docs/gone.md), ![pic](docs/pic.png), <img src=\"docs/there.md\">,\n"
        "[web](https://example.org/x) and [top](#top); in code `[not](a-link.md)`.\n"
        "Data in ../shared/data, results under /work/results (issue 7).\n\n"
        "```bash\n"
        "$ hippo-peft volumes pred -o volumes.csv --remove-small-component 20  # a prefix is a typo here\n"
        "nnUNet_raw=/data .venv/bin/hippo-peft qc pred --images imgs \\\n"
        "    --processes 2 > qc.log 2>&1 && hippo-peft volumes pred --no-such-flag\n"
        "hippo-peft benchmark --target t --workdir w --n-sources 60 | tee log\n"
        "hippo-peft classify -h\n"
        "```\n\n"
        "```console\n"
        "$ hippo-peft env\n"
        "hippo-peft demo: output that is not a command --bad\n"
        "```\n")
    assert broken_links([readme], tmp_path) == ["README.md:1: docs/gone.md", "README.md:1: docs/pic.png"]
    assert [p.split(": ")[1] for p in forbidden_lines([readme], tmp_path)] == [
        "../shared", "an absolute machine path", "a note of our own work (issue N)"]
    problems = hippo_peft_problems([readme], tmp_path)
    assert len(problems) == 3, problems
    assert problems[0].startswith("README.md:6: hippo-peft volumes pred") and "--remove-small-component " in problems[0]
    assert problems[1].startswith("README.md:7: nnUNet_raw=/data .venv/bin/hippo-peft qc pred")
    assert "unrecognized arguments: --no-such-flag" in problems[1]
    assert problems[2].startswith("README.md:9: hippo-peft benchmark") and "--n-sources" in problems[2]
    # a record file may keep its paths
    (tmp_path / "docs" / "changelog.md").write_text("fixed in issue 7, run in /work/x\n")
    assert forbidden_lines([tmp_path / "docs" / "changelog.md"], tmp_path) == []


def test_command_splitting():
    assert commands("A=1 B=2 /x/.venv/bin/hippo-peft env | grep x; nnUNetv2_train 4 3d_fullres 0 -tr T "
                    "2>&1 > log  # train") == [["hippo-peft", "env"], ["grep", "x"],
                                               ["nnUNetv2_train", "4", "3d_fullres", "0", "-tr", "T"]]


# --- hippo-peft COMMAND -h ----------------------------------------------------------------------------------------

def subcommands(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    parser = parser or build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_command_help_describes_the_command_and_shows_defaults(name):
    parser = subcommands()[name]
    text = parser.format_help()
    assert parser.description and len(parser.description) > 20, name
    for note in (":mod:", "``", "on purpose", "moved in"):
        assert note not in text, (name, note)
    assert not re.search(r"\bissue\s*[0-9]", text, re.I)
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
            helped = parser._get_formatter()._get_help_string(action)
            assert "(default:" in helped, (name, action.option_strings, helped)
            assert len(re.findall(r"\(default", helped)) == 1, (name, action.option_strings, helped)


def test_defaults_users_asked_for_are_visible():
    helps = {name: parser.format_help() for name, parser in subcommands().items()}
    assert "(default: unetr)" in helps["demo"] and "(default: compact)" in helps["demo"]
    assert "(default: cpu)" in re.sub(r"\s+", " ", helps["benchmark"])
    assert "(default: 40)" in re.sub(r"\s+", " ", helps["benchmark"])  # --n-source, as resolve_settings has it
