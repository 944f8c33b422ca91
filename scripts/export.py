"""`prelabel export`: the final fine-tuning dataset from a Label Studio project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from prelabel.scripts.common import console, fail, ls_client, settings_or_exit, warn_result_problems


def export(
    project: Annotated[str, typer.Argument(help="Label Studio project: its id or its title (as push --project)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (replaced only when complete)")] = Path(
        "dataset"
    ),
    formats: Annotated[
        list[str], typer.Option("--format", "-f", help="openai, bedrock, alpaca, sharegpt, parquet (repeatable)")
    ] = ["openai", "bedrock", "alpaca", "sharegpt", "parquet"],  # noqa: B006 (typer shows it in --help; never mutated)
    threshold: Annotated[str, typer.Option(help="lowest judge level an unreviewed LLM label needs")] = "good",
    instruction: Annotated[
        str | None, typer.Option(help="the task the fine-tuned model will serve (system prompt)")
    ] = None,
    validation_fraction: Annotated[float, typer.Option(help="share of examples for validation")] = 0.1,
    seed: Annotated[int, typer.Option(help="seed of the train/validation split")] = 0,
    assume_random: Annotated[
        bool,
        typer.Option(
            help="take reviews without a recorded inclusion probability as a uniform random sample (quality estimate)"
        ),
    ] = False,
    url: Annotated[str | None, typer.Option(help="Label Studio URL (default LABEL_STUDIO_URL)")] = None,
    api_key: Annotated[str | None, typer.Option(help="token (default LABEL_STUDIO_API_KEY)")] = None,
) -> None:
    """Reviewer labels first, then LLM labels rated at least --threshold; everything else is dropped."""
    from pydantic import ValidationError

    from prelabel.export import ExportError
    from prelabel.export.options import ExportOptions
    from prelabel.export.writer import export_dataset
    from prelabel.label_interface import LabelConfigError, parse_label_config
    from prelabel.labelstudio import LabelStudioError
    from prelabel.records import result_problems, reviewed_tasks
    from prelabel.scripts.tables import export_table

    settings = settings_or_exit()
    client = ls_client(settings, url, api_key)
    try:
        project_id = client.project_id_for(project)
        config = parse_label_config(client.project(project_id).label_config)
        options = ExportOptions(
            out_dir=out,
            formats=formats,
            kind=config.kind,
            labels=config.class_labels,
            instruction=instruction,
            validation_fraction=validation_fraction,
            seed=seed,
            threshold=threshold,
            assume_random=assume_random,
        )
        with console.status(f"exporting project {project_id} from Label Studio..."):
            records = reviewed_tasks(config, client.export(project_id))
        report = export_dataset(records, options)
    except ValidationError as error:
        first = error.errors()[0]
        raise fail(f"option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    except (LabelStudioError, LabelConfigError, ExportError, OSError) as error:
        raise fail(str(error)) from None
    warn_result_problems(result_problems(records))
    console.print(export_table(report))
    if report.quality is not None:
        console.print(f"quality: {report.quality.statement()}", markup=False, highlight=False)
        for warning in report.quality.warnings:
            console.print(f"[yellow]note: {escape(warning)}[/yellow]", highlight=False)
    console.print(
        f"dataset written to {report.out_dir} (manifest.json lists every file with its sha256; "
        "README.md is the dataset card)"
    )
