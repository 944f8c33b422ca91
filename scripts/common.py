"""What every subcommand shares: the console, settings, the engine and the Label Studio client."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from prelabel import label_config

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.labelstudio import LabelStudioClient
    from prelabel.settings import Settings
    from prelabel.tally import Tally

console = Console(stderr=True)


def label_config_path(name: str) -> Path:
    """The shipped Label Studio config `name` (package data; a real file in an installed wheel)."""
    return label_config.path(name)


def fail(message: str, code: int = 2) -> typer.Exit:
    # Messages quote files, fields and data ("result[0].value"): escaped, so nothing in them reads as markup.
    console.print(f"[red]{escape(message)}[/red]")
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    from rich.logging import RichHandler  # lazy: keeps --help fast

    from prelabel.settings import Settings  # lazy: keeps --help fast

    try:
        settings = Settings()
    except ValueError as error:
        raise fail(f"settings: {error}") from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
    quiet_http_logs()
    return settings


def quiet_http_logs() -> None:
    """Keep the HTTP clients at WARNING: one INFO line per request would bury the progress bar.
    LOG_LEVEL=DEBUG keeps them, for whoever asked to see every request."""
    if logging.getLogger().level <= logging.DEBUG:
        return
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def engine_or_exit(settings: Settings) -> Engine:
    """prelabel.engine.build_engine (rate limits shared with other processes) with a usage log written at once,
    or a clean exit on a same-family judge, an unusable provider or a MODEL_DIR it cannot write."""
    # Imported when a command builds an engine: `prelabel --help` and the commands that call no model start
    # without loading the labeling stack.
    from prelabel.engine import build_engine
    from prelabel.families import SameFamilyError
    from prelabel.faults import StoreUnavailable
    from prelabel.providers import ProviderError
    from prelabel.store import Store

    try:
        return build_engine(settings, store=Store(settings.store_path))
    except (SameFamilyError, ProviderError, StoreUnavailable) as error:
        raise fail(str(error)) from None


def ls_client(settings: Settings, url: str | None, api_key: str | None) -> LabelStudioClient:
    from prelabel.labelstudio import LabelStudioClient, LabelStudioError

    key = api_key or (settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else None)
    try:
        return LabelStudioClient(url or settings.label_studio_url or "", key or "")
    except LabelStudioError as error:
        raise fail(str(error)) from None


def warn_result_problems(problems: list[str], shown: int = 5) -> None:
    """Say which exported results were left out for their shape (the rest of the project is still used)."""
    warn_problems(problems, "annotation or prediction results left out (wrong shape)", shown)


def warn_problems(problems: list[str], what: str, shown: int = 5) -> None:
    """ "N <what>:" and the first `shown` problems, each naming its file or task and field, as typed."""
    if not problems:
        return
    console.print(f"[yellow]{len(problems)} {what}:[/yellow]")
    for problem in problems[:shown]:
        console.print(f"  {problem}", markup=False, highlight=False)
    if len(problems) > shown:
        console.print(f"  ... and {len(problems) - shown} more")


def print_tally(tally: Tally, what: str = "labels") -> None:
    """How the stored labels came out: rated, unrated with the top reasons, failed with the top errors."""
    colour = "green" if not (tally.unrated or tally.failed) else "yellow"
    console.print(f"[{colour}]{what}: {tally.headline()}[/{colour}]")
    for reason, count in tally.top_unrated():
        console.print(f"  unrated ({count:,}): {reason}", markup=False, highlight=False)
    for reason, count in tally.top_failures():
        console.print(f"  failed ({count:,}): {reason}", markup=False, highlight=False)
