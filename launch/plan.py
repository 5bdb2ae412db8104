"""A launch plan: the files a launcher generates and the shell commands it runs, as one bash script.

Every launcher builds a `Plan` and either prints it (`--dry_run`) or executes it, and both use the
same text: the rendered script writes the generated files into a staging directory (quoted heredocs,
so their text is exactly what is shown) and then runs the steps in order under `set -euo pipefail`.
What a dry run prints is what a real run executes; saved to a file, it can be run by hand.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import TextIO

_HEREDOC_DELIMITER = "COALA_GENERATED_FILE_END"


@dataclasses.dataclass(frozen=True)
class GeneratedFile:
    """A file the plan writes before its steps run.

    Attributes:
      name: file name inside the staging directory (no directories).
      content: the whole text of the file.
      description: one line saying what the file is for.
      executable: whether to mark it executable.
    """

    name: str
    content: str
    description: str
    executable: bool = False

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"generated file name {self.name!r} must be a plain file name")
        if _HEREDOC_DELIMITER in self.content:
            raise ValueError(f"generated file {self.name!r} contains the heredoc delimiter")


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a plan: a description and the bash text that performs it.

    Attributes:
      description: what the step does, printed as a comment above it and echoed when it runs.
      command: bash text (one or more lines); may use `$STAGING_DIR` and variables set by earlier
        steps.
    """

    description: str
    command: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """Generated files plus ordered steps.

    Attributes:
      title: what the plan does, e.g. `coala Cloud TPU launcher: up`.
      summary: lines describing the deployment (hosts, actors, workdir), printed as comments.
      staging_dir: local directory the generated files are written to.
      files: the generated files.
      steps: the commands, in order.
      required_tools: executables that must be on PATH for a real run (e.g. `gcloud`).
    """

    title: str
    summary: tuple[str, ...]
    staging_dir: str
    files: tuple[GeneratedFile, ...]
    steps: tuple[Step, ...]
    required_tools: tuple[str, ...] = ()

    def file(self, name: str) -> GeneratedFile:
        """The generated file called `name` (KeyError if there is none)."""
        for generated in self.files:
            if generated.name == name:
                return generated
        names = [generated.name for generated in self.files]
        raise KeyError(f"plan {self.title!r} generates no file {name!r}; it generates {names}")

    def render(self) -> str:
        """The plan as one self-contained bash script: what a dry run prints, a real run runs."""
        lines = ["#!/usr/bin/env bash", f"# {self.title}"]
        lines += [f"# {line}" for line in self.summary]
        lines += [
            "set -euo pipefail",
            f"STAGING_DIR={shlex.quote(self.staging_dir)}",
            'mkdir -p "$STAGING_DIR"',
            "",
        ]
        for generated in self.files:
            path = f'"$STAGING_DIR"/{shlex.quote(generated.name)}'
            lines.append(f"# ===== generated file {generated.name}: {generated.description} =====")
            lines.append(f"cat > {path} <<'{_HEREDOC_DELIMITER}'")
            lines.append(generated.content.rstrip("\n"))
            lines.append(_HEREDOC_DELIMITER)
            if generated.executable:
                lines.append(f"chmod +x {path}")
            lines.append("")
        for number, step in enumerate(self.steps, start=1):
            heading = f"step {number}/{len(self.steps)}: {step.description}"
            lines.append(f"# ----- {heading} -----")
            lines.append(f"echo {shlex.quote(f'[coala launch] {heading}')}")
            lines.append(step.command.rstrip("\n"))
            lines.append("")
        return "\n".join(lines)

    def execute(self, *, env: dict[str, str] | None = None) -> int:
        """Writes the rendered script to the staging directory and runs it with bash.

        Args:
          env: the environment of the script (default: this process's).

        Returns:
          The script's exit status.

        Raises:
          FileNotFoundError: a required tool is not on the PATH the script would see.
        """
        environment = dict(os.environ if env is None else env)
        search_path = environment.get("PATH")
        missing = [tool for tool in self.required_tools if not shutil.which(tool, path=search_path)]
        if missing:
            raise FileNotFoundError(
                f"{self.title}: {', '.join(missing)} not found on PATH; install it, or pass "
                "--dry_run to see the commands"
            )
        os.makedirs(self.staging_dir, exist_ok=True)
        script_path = os.path.join(self.staging_dir, "plan.sh")
        with open(script_path, "w") as script:
            script.write(self.render() + "\n")
        return subprocess.run(["bash", script_path], env=environment, check=False).returncode


def run_or_print(plan: Plan, *, dry_run: bool, out: TextIO | None = None) -> int:
    """Prints the plan (`dry_run`) or executes it; returns a process exit status."""
    if not dry_run:
        return plan.execute()
    out = out or sys.stdout
    shebang, rest = plan.render().split("\n", 1)
    out.write(
        f"{shebang}\n"
        "# DRY RUN: nothing was executed. Every generated file and every command follows;\n"
        "# this text is the script a real run executes.\n"
        f"{rest}\n"
    )
    return 0


def command_line_main(
    program: str, build_plan: Callable[[list[str]], tuple[Plan, bool]], argv: list[str] | None
) -> int:
    """A launcher's `main`: builds the plan from `argv` (default: the command line), prints it (`--dry_run`) or runs
    it, and returns the exit status; a bad flag or a missing tool is one line on stderr and status 2."""
    try:
        plan, dry_run = build_plan(sys.argv[1:] if argv is None else argv)
        return run_or_print(plan, dry_run=dry_run)
    except (ValueError, FileNotFoundError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 2
