"""The repository stands alone, and its README agrees with the `coala` command.

* No tracked file outside results/ cites a file that a clone does not have (the project's working notes); the paper
  is cited by its own numbers and the choices it leaves open by a section of docs/choices.md, which must exist.
* Every `coala ...` command line the README shows parses, and every experiment it names exists. How: each command
  line is split into arguments (placeholders such as DIR, N or CONFIG replaced by real values); then, in one child
  process per command, the command's module is imported (which defines its absl flags, as `coala` does), the
  arguments go through `cli.preflight` (config name, `--config.FIELD` overrides) and absl's parser (with
  sys.argv set as `coala` leaves it, since ml_collections reads the override names from it), and the positional
  arguments left over are checked against the command's names (experiments, analytic figures). Nothing is trained or
  built: no JAX computation runs. One child per command because two commands may define flags of the same name.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# Spelled in pieces so that this file does not cite them itself.
FOREIGN = ("paper" + ".md", "DESIGN" + ".md", "STYLE" + ".md", ".." + "/shared")
SKIPPED_DIRS = {".git", ".venv", ".venv-reverb", "results", "workdirs", "node_modules", "__pycache__"}


def _tracked_files() -> list[pathlib.Path]:
    """The checkout's tracked files (git), or every file outside the skipped folders when git is unavailable."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout
        return [REPO / name for name in out.split("\0") if name and (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [
            path
            for path in REPO.rglob("*")
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts)
        ]


def _texts() -> dict[str, str]:
    texts = {}
    for path in _tracked_files():
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith("results/"):
            continue
        try:
            texts[relative] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):  # binary files (images)
            continue
    return texts


def test_no_tracked_file_cites_files_a_clone_lacks():
    offenders = sorted(
        f"{name}:{number}: {line.strip()[:100]}"
        for name, text in _texts().items()
        for number, line in enumerate(text.splitlines(), 1)
        if any(foreign in line for foreign in FOREIGN)
    )
    assert offenders == []


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_cited_section_of_a_doc_exists():
    texts = _texts()
    anchors = {
        name: {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
        for name, text in texts.items()
        if name.startswith("docs/") and name.endswith(".md")
    }
    missing = sorted(
        f"{name}: docs/{doc}#{anchor}"
        for name, text in texts.items()
        for doc, anchor in re.findall(r"docs/([\w.]+\.md)#([\w\-]+)", text)
        if anchor not in anchors.get(f"docs/{doc}", set())
    )
    assert missing == []


def test_code_comments_carry_no_issue_numbers_or_dates():
    pattern = re.compile(r"\b[Ii]ssue \d+|\(#\d+\)|\b20\d\d-\d\d-\d\d\b")
    offenders = sorted(
        f"{name}:{number}: {line.strip()[:100]}"
        for name, text in _texts().items()
        if name.endswith((".py", ".sh", ".toml", "Dockerfile")) and not name.startswith("tests/test_docs.py")
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    )
    assert offenders == []


# Placeholders of the README's command lines, and what stands in for them here.
PLACEHOLDERS = {"DIR": "workdirs/some_run", "N": "2", "CONFIG": "ipd_tiny", "WORKDIR...": "workdirs/some_run"}


def readme_command_lines() -> list[list[str]]:
    """Every `coala ...` command line of the README (fenced bash blocks and inline code), as argument lists."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip().startswith("coala ")]
    lines += [" ".join(span.split()) for span in re.findall(r"`(coala [^`]+)`", text)]
    commands = []
    for line in lines:
        for part in line.split("&&"):
            words = [PLACEHOLDERS.get(word, word) for word in shlex.split(part) if word != "..."]
            words = [re.sub(r"=([A-Z]+)$", lambda m: "=" + PLACEHOLDERS.get(m.group(1), m.group(1)), w) for w in words]
            words = [re.sub(r"=(\w+)\|\w+$", r"=\1", word) for word in words]  # --launch=local|ray: the first
            commands.append(words[1:])  # without "coala"
    return commands


_CHILD = r"""
import importlib, json, sys
from absl import flags
from coala_dist import cli
name, lines = json.loads(sys.argv[1])
module = importlib.import_module(cli.COMMANDS[name][0])
valid = None
if name == "experiment":
    from coala_dist.experiments import EXPERIMENTS
    valid = set(EXPERIMENTS) | {"NAME"}
elif name == "analytic":
    from coala_dist.analytic import figures
    valid = {*figures.FIGURES, "all"}
problems = []
for args in lines:
    try:
        # ml_collections reads the names of --config.FIELD overrides from sys.argv, as `coala` leaves it.
        sys.argv = [f"coala {name}", *cli.preflight(module, args)]
        rest = flags.FLAGS(sys.argv)[1:]
    except Exception as error:
        problems.append(f"coala {name} {' '.join(args)}: {str(error).splitlines()[0]}")
        continue
    finally:
        flags.FLAGS.unparse_flags()
    if valid is not None and not set(rest) <= valid:
        problems.append(f"coala {name} {' '.join(args)}: unknown {sorted(set(rest) - valid)}")
print(json.dumps(problems))
"""


def test_every_readme_command_line_parses():
    from coala_dist import cli

    by_command: dict[str, list[list[str]]] = {}
    for words in readme_command_lines():
        while words and words[0].startswith("--compilation_cache"):
            words = words[1:]
        if not words or words[0] in ("COMMAND", "--help"):
            continue
        assert words[0] in cli.COMMANDS, f"README names an unknown command: coala {' '.join(words)}"
        by_command.setdefault(words[0], []).append(words[1:])
    assert {"train", "experiment", "analytic", "scale", "eval", "plot", "bench", "snr", "play"} <= set(by_command)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    problems = []
    for name, lines in sorted(by_command.items()):
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps([name, lines])],
            cwd=REPO, capture_output=True, text=True, env=env, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        problems += json.loads(result.stdout.strip().splitlines()[-1])
    assert problems == []


@pytest.mark.parametrize("source", ["README.md", "cli"])
def test_every_experiment_the_docs_name_exists(source):
    """`coala experiment NAME` in the README and in `coala --help` / `coala experiment --help` name real experiments,
    and the help lists both games' experiments."""
    from coala_dist import cli

    if source == "README.md":
        text = (REPO / "README.md").read_text()
    else:
        import coala_dist.commands.experiment as experiment_command

        text = cli._usage() + "\n" + (experiment_command.__doc__ or "")
        assert "Clean Up" in cli._usage() and "IPD" in cli._usage()
    script = "import json; from coala_dist.experiments import EXPERIMENTS; print(json.dumps(list(EXPERIMENTS)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    experiments = set(json.loads(result.stdout))
    named = set(re.findall(r"coala experiment ([a-z][\w-]*)", text))
    named |= set(re.findall(r"\b((?:ipd|cleanup)-[\w-]+)\b", text)) if source == "cli" else set()
    assert named, "no experiment named"
    assert named <= experiments | {"NAME"}
    if source == "cli":
        assert experiments <= named, "the help omits experiments"


def test_ci_installs_and_tests_each_profile_exactly_as_the_readme_says():
    """.ci/run's leg of each profile runs the README's set-up commands and its test command for that profile."""
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()

    def commands(text: str) -> list[str]:
        return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]

    setup = readme[readme.index("## Set up") : readme.index("## Run")]
    setup_blocks = [commands(block) for block in re.findall(r"```bash\n(.*?)```", setup, re.S)]
    tests = commands(re.search(r"## Tests\n\n```bash\n(.*?)```", readme, re.S).group(1))
    for profile, block, test in (("current", setup_blocks[0], tests[0]), ("reverb", setup_blocks[1], tests[1])):
        leg = commands(re.search(rf"leg_{profile}\(\) {{\n(.*?)\n}}", ci, re.S).group(1))
        assert leg[-1] == test, profile
        # CI keeps the reverb profile's environment in .venv-reverb, beside the current one.
        installs = [line.replace(".venv-reverb", ".venv") for line in leg if line.startswith(("python3", "pip "))]
        assert installs == block, profile
    assert "-m stack" in tests[1] and "-m stack" not in tests[0]
