"""The `prelabel` command: the typer app and the subcommands that fit in a few lines (serve, predict, prompts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from prelabel.scripts import demo as demo_command
from prelabel.scripts import evaluate as evaluate_command
from prelabel.scripts import export as export_command
from prelabel.scripts import label as label_command
from prelabel.scripts import pull as pull_command
from prelabel.scripts import push as push_command
from prelabel.scripts import quality as quality_command
from prelabel.scripts.common import console, engine_or_exit, fail, label_config_path, settings_or_exit

app = typer.Typer(help="LLM pre-labelling with a cross-family LLM judge, for Label Studio.", no_args_is_help=True)
app.command(name="push")(push_command.push)
app.command(name="pull")(pull_command.pull)
app.command(name="export")(export_command.export)
app.command(name="demo")(demo_command.demo)
app.command(name="label")(label_command.label)
app.command(name="evaluate")(evaluate_command.evaluate)
app.command(name="compare")(evaluate_command.compare)
app.command(name="report")(evaluate_command.report)
app.command(name="quality")(quality_command.quality)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 9090,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    threads: Annotated[int, typer.Option(help="threads per worker for /predict (concurrent predictions)")] = 8,
) -> None:
    """Serve the Label Studio ML backend (Hypercorn: requests are read whole, under PRELABEL_READ_TIMEOUT)."""
    settings = settings_or_exit()
    engine_or_exit(settings).close()  # fail fast on a same-family judge or a missing key, before starting workers
    from prelabel.server import run_server

    console.print(
        f"prelabel ML backend on http://{host}:{port} "
        f"(annotator {settings.annotator.spec}, judge {', '.join(ref.spec for ref in settings.judges)})"
    )
    run_server(host, port, workers=workers, threads=threads)


@app.command()
def predict(
    tasks_file: Annotated[Path, typer.Argument(help="JSONL, JSON or CSV: one task (or task data) per record")],
    label_config: Annotated[
        Path, typer.Option("--label-config", "-c", help="Label Studio config XML")
    ] = label_config_path("summarization"),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write JSONL here (default stdout)")] = None,
) -> None:
    """Label tasks without Label Studio and print one prediction per line."""
    from prelabel.label_interface import LabelConfigError
    from prelabel.model import PrelabelModel
    from prelabel.predictions import prediction_for
    from prelabel.tasks_io import TaskFileError, read_tasks

    settings = settings_or_exit()
    engine = engine_or_exit(settings)
    try:
        tasks = read_tasks(tasks_file)
        model = PrelabelModel(engine, label_config.read_text(encoding="utf-8"))
        config = model.config()
    except (TaskFileError, LabelConfigError, OSError) as error:
        raise fail(str(error)) from None
    outcomes = model.predict_outcomes(tasks)
    sink = output.open("w", encoding="utf-8") if output else sys.stdout
    failed = 0
    try:
        for outcome in outcomes:
            record = {
                "task_id": outcome.task_id,
                "prediction": prediction_for(outcome, config),
                "label": outcome.label,
                "rating": outcome.verdict.level_name if outcome.verdict else None,
                "reason": outcome.verdict.reason if outcome.verdict else None,
                "unrated_reason": outcome.unrated_reason,
                "error": outcome.error,
                "warnings": outcome.warnings,
            }
            failed += outcome.error is not None
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if output:
            sink.close()
    engine.close()
    console.print(
        f"{len(outcomes) - failed} labeled, {failed} failed "
        f"({engine.annotator_ref.spec} -> {', '.join(ref.spec for ref in engine.judge_refs)})"
    )
    if engine.family_warning:
        console.print(f"[yellow]{engine.family_warning}[/yellow]")
    if failed:
        raise typer.Exit(1)


@app.command()
def prompts(
    show: Annotated[str | None, typer.Argument(help="print this version's template")] = None,
) -> None:
    """Prompt versions stored by the backend (revised in Label Studio); use one with evaluate --prompt NAME."""
    from datetime import datetime

    from prelabel.prompts import PromptError, PromptRegistry
    from prelabel.scripts.table_layout import Table

    settings = settings_or_exit()
    registry = PromptRegistry(settings.model_dir, settings.store_path)
    if show is not None:
        try:
            print(registry.path_of(show).read_text(encoding="utf-8"))
        except (PromptError, OSError) as error:
            raise fail(str(error)) from None
        return
    table = Table(title=f"prompt versions in {settings.store_path}")
    table.add_column("name", no_wrap=True)  # what evaluate --prompt takes: never broken across lines
    for column in ("kind", "hash", "created", "origin", "file"):
        table.add_column(column)
    for version in registry.versions():
        created = datetime.fromtimestamp(version.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(version.name, version.kind, version.content_hash, created, version.origin or "", version.path)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
