"""`prelabel --help` and every subcommand's `--help` start without the provider SDKs, Arrow or the tokenizer: a help
screen has no use for them, and each costs hundreds of milliseconds to import. Checked in a fresh process that
imports the CLI and renders each help screen (benchmarks.startup, which also times it)."""

from __future__ import annotations

import pytest

from benchmarks.startup import HEAVY_MODULES, NEVER_AT_HELP, help_imports


def test_help_screens_do_not_load_the_sdks_arrow_or_the_tokenizer():
    imports = help_imports(heavy=HEAVY_MODULES)
    rendered = [name for name, _ in imports.steps]
    assert rendered[:2] == ["import prelabel.scripts.cli", "prelabel --help"]
    assert {"prelabel predict --help", "prelabel serve --help", "prelabel label --help"} <= set(rendered), rendered
    offending = [module for module in NEVER_AT_HELP if module in imports.loaded]
    if offending:
        pytest.fail(
            f"--help loads {', '.join(offending)} (all heavy modules loaded: {', '.join(imports.loaded)})\n"
            + "\n".join(f"  {imports.explain(module)}" for module in offending),
            pytrace=False,
        )


def test_the_top_help_screen_builds_no_pydantic_model():
    """`prelabel --help` itself stays clear of pydantic (about 100 ms of model building at import): a command
    module that needs a model or a constant from a model's module imports it inside the command."""
    imports = help_imports(heavy=("pydantic",))
    steps = dict(imports.steps)
    assert "pydantic" not in steps["prelabel --help"], imports.explain("pydantic")
