"""`prelabel demo`: the whole loop on real dialogues, with no API key needed."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from prelabel.scripts.common import console, print_tally, settings_or_exit
from prelabel.scripts.table_layout import Table


def demo(
    no_wait: Annotated[bool, typer.Option("--no-wait", help="stop everything once the table is printed")] = False,
    ls_port: Annotated[int, typer.Option(help="Label Studio port")] = 8080,
    backend_port: Annotated[int, typer.Option(help="prelabel backend port")] = 9090,
    sample: Annotated[int, typer.Option(help="dialogues in the round")] = 15,
    seed: Annotated[int | None, typer.Option(help="seed of the random draw")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="where Label Studio's database and logs live")] = None,
) -> None:
    """Start Label Studio and the backend, push a random round of real dialogues, get predictions, and keep
    the servers up for review until Ctrl-C."""
    from prelabel.harness.demo import DemoError, DemoOptions, run_demo
    from prelabel.harness.labelstudio_server import LabelStudioServerError
    from prelabel.harness.local_model import LocalModelError
    from prelabel.labelstudio import LabelStudioError

    settings_or_exit()
    options = DemoOptions(ls_port=ls_port, backend_port=backend_port, sample=sample, seed=seed)
    if work_dir:
        options.work_dir = work_dir
    # SIGTERM stops the demo like Ctrl-C does, so every process it started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    with ExitStack() as stack:
        try:
            result = run_demo(options, lambda message: console.print(message), stack)
        except KeyboardInterrupt:
            console.print("interrupted: stopping every process the demo started")
            raise typer.Exit(130) from None
        except (DemoError, LabelStudioServerError, LabelStudioError, LocalModelError, OSError) as error:
            console.print(f"[red]demo failed:[/red] {error}")
            console.print("Every process the demo started is being stopped.")
            raise typer.Exit(1) from None

        table = Table(title=f"{result.round}: predictions stored in Label Studio")
        for column in ("task", "rating", "score", "summary (first words)"):
            table.add_column(column)
        for row in result.rows:
            words = " ".join((row.summary or "").split()[:14])
            table.add_row(
                str(row.task_id), row.rating or "unrated", f"{row.score:.2f}" if row.score is not None else "-", words
            )
        typer.echo("")
        console.print(table)
        console.print(f"annotator {result.annotator}, judge {result.judge}; model_version {result.model_version}")
        print_tally(result.outcomes, "predictions stored")
        if result.warning:
            console.print(f"[yellow]{result.warning}[/yellow]")
        console.print(f"Review them at [bold]{result.project_url}[/bold]")
        console.print(f"Log in as [bold]{result.username}[/bold] with password [bold]{result.password}[/bold]")
        # The engineer's path (README) runs against this Label Studio: the line to paste in another shell.
        console.print("For the engineer's path in another shell (the API token is also under Account & Settings):")
        typer.echo(f"export LABEL_STUDIO_URL={result.url} LABEL_STUDIO_API_KEY={result.token}")
        console.print(f"(ready in {time.monotonic() - started:.0f} s)")
        if no_wait:
            return
        console.print("Servers stay up for review; press Ctrl-C to stop them.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping...")
