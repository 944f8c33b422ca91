"""prelabel's start-up: the wall time of `prelabel --help` in a fresh process, and which heavy modules the command
line loads to show its help screens (and through which imports), for benchmarks.run and tests/unit/test_startup.py.

    python -m benchmarks.startup    # prints both
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a help screen has no use for: the provider SDKs, Arrow, the tokenizer, the Label Studio SDK, the web
# framework and the statistics stacks. Each costs from tens to hundreds of milliseconds to import.
HEAVY_MODULES = (
    "openai",
    "anthropic",
    "pyarrow",
    "tiktoken",
    "label_studio_sdk",
    "flask",
    "sklearn",
    "scipy",
    "ppi_py",
)
# Of those, the ones no `--help` may load (tests/unit/test_startup.py).
NEVER_AT_HELP = ("openai", "anthropic", "pyarrow", "tiktoken", "ppi_py")
STEP_MARK = "prelabel-startup-step: "

# Runs in a fresh `python -X importtime` process: import the CLI, render the top help and every subcommand's, and
# after each step write which heavy modules are loaded. argv: heavy modules (JSON), the output file.
_RUNNER = r"""
import json, sys

heavy = json.loads(sys.argv[1])
steps = []

def step(name):
    sys.stderr.write("%s%s\n" % (STEP_MARK, name))
    sys.stderr.flush()

def record(name):
    steps.append([name, sorted(m for m in heavy if m in sys.modules)])

step("import prelabel.scripts.cli")
from prelabel.scripts.cli import app
from typer.main import get_command

record("import prelabel.scripts.cli")
for args in [[]] + [[name] for name in sorted(get_command(app).commands)]:
    name = " ".join(["prelabel", *args, "--help"])
    step(name)
    try:
        app([*args, "--help"], prog_name="prelabel")
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise
    record(name)
with open(sys.argv[2], "w") as handle:
    json.dump(steps, handle)
"""


@dataclass
class HelpImports:
    """Heavy modules loaded by the CLI's help screens."""

    steps: list[tuple[str, list[str]]]  # (what ran, heavy modules loaded once it had), in order
    first_step: dict[str, str] = field(default_factory=dict)  # heavy module -> the step that loaded it
    chains: dict[str, list[str]] = field(default_factory=dict)  # heavy module -> importers, outermost first

    @property
    def loaded(self) -> list[str]:
        return self.steps[-1][1] if self.steps else []

    def explain(self, module: str) -> str:
        chain = " > ".join(self.chains.get(module, [module]))
        return f"{module}: loaded by `{self.first_step.get(module, '?')}` via {chain}"


def import_chains(importtime: str, modules: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """From `python -X importtime` output: for each module, the chain of imports that first loaded it, and the
    step (a STEP_MARK line) during which it was."""
    entries: list[tuple[int, str, str]] = []  # (depth, module, step)
    current = "python start-up"
    for line in importtime.splitlines():
        if line.startswith(STEP_MARK):
            current = line[len(STEP_MARK) :]
        elif line.startswith("import time:") and line.count("|") >= 2:
            name_field = line.split("|", 2)[2]
            if name_field.strip() == "imported package":
                continue
            depth = (len(name_field) - len(name_field.lstrip()) - 1) // 2
            entries.append((depth, name_field.strip(), current))
    chains: dict[str, list[str]] = {}
    steps: dict[str, str] = {}
    for index, (depth, name, step) in enumerate(entries):
        if name not in modules or name in chains:
            continue
        chain = [name]
        # importtime prints a module after everything it imported: its importer is the next line less indented.
        for later_depth, later_name, _ in entries[index + 1 :]:
            if later_depth < depth:
                chain.insert(0, later_name)
                depth = later_depth
        chains[name], steps[name] = chain, step
    return chains, steps


def help_imports(python: str = sys.executable, heavy: tuple[str, ...] = HEAVY_MODULES) -> HelpImports:
    """Import the CLI and render every help screen in one fresh process; see which heavy modules got loaded."""
    with tempfile.TemporaryDirectory(prefix="prelabel-startup-") as tmp:
        output = Path(tmp) / "steps.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
        result = subprocess.run(
            [python, "-X", "importtime", "-c", f"STEP_MARK = {STEP_MARK!r}\n{_RUNNER}", json.dumps(heavy), str(output)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
            raise RuntimeError("rendering the help screens failed:\n" + "\n".join(errors[-30:]))
        steps = [(name, loaded) for name, loaded in json.loads(output.read_text())]
    chains, first = import_chains(result.stderr, heavy)
    return HelpImports(steps, first, chains)


def median_wall_time(command: list[str], runs: int = 7) -> float:
    """Median wall time of `command` in a fresh process, after one unmeasured run (bytecode compiled, files cached)."""
    times = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        if attempt:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    help_s = median_wall_time([sys.executable, "-m", "prelabel", "--help"])
    python_s = median_wall_time([sys.executable, "-c", "pass"])
    print(f"prelabel --help: {help_s:.3f} s (python -c pass: {python_s:.3f} s), median of 7")
    imports = help_imports()
    print(f"heavy modules loaded by {len(imports.steps) - 1} help screens: {', '.join(imports.loaded) or 'none'}")
    for module in imports.loaded:
        print(f"  {imports.explain(module)}")


if __name__ == "__main__":
    main()
