"""`prelabel push`: a fresh sample of the pool into a Label Studio project, as one review round, each task
recording the probability with which it was drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from prelabel.scripts.common import (
    console,
    engine_or_exit,
    fail,
    label_config_path,
    ls_client,
    print_tally,
    settings_or_exit,
)
from prelabel.scripts.table_layout import Table


def push(
    pool: Annotated[Path, typer.Argument(help="unlabeled data: JSONL, JSON or CSV")],
    project: Annotated[str, typer.Option(help="project title (created if absent)")] = "prelabel summarization",
    label_config: Annotated[Path, typer.Option("--label-config", "-c", help="Label Studio config XML")] = (
        label_config_path("summarization")
    ),
    sample: Annotated[int | None, typer.Option(help="draw N items never pushed before (default: all of them)")] = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="random: every candidate alike; uncertain: favour labels the judge is least sure are at least "
            "--threshold; stratified: by the judge's level, over-sampling the rarer levels (these two need --labels)"
        ),
    ] = "random",
    labels: Annotated[
        Path | None,
        typer.Option(
            help="`prelabel label` output of the pool: the judge's ratings the draw uses, and the labels pushed "
            "as predictions"
        ),
    ] = None,
    threshold: Annotated[str, typer.Option(help="the level uncertain routing asks about (name or 0..4)")] = "good",
    seed: Annotated[int | None, typer.Option(help="random seed of the draw")] = None,
    round_name: Annotated[str | None, typer.Option("--round", help="round name (default round-<n>)")] = None,
    input_field: Annotated[str | None, typer.Option(help="field of the input in the pool records")] = None,
    # A list default is typer's way to declare a repeatable option; typer copies it, nothing mutates it.
    keep_field: Annotated[list[str], typer.Option(help="extra record field to keep in the task data")] = [],  # noqa: B006
    predict: Annotated[bool, typer.Option(help="compute predictions here and import them with the tasks")] = True,
    backend_url: Annotated[
        str | None, typer.Option(help="connect this ML backend; without --predict, Label Studio asks it")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Label Studio URL (default LABEL_STUDIO_URL)")] = None,
    api_key: Annotated[str | None, typer.Option(help="token (default LABEL_STUDIO_API_KEY)")] = None,
) -> None:
    """Push a sample of unlabeled items to Label Studio, pre-labelled and rated."""
    from prelabel.dialogue import InputError
    from prelabel.judge import threshold_level
    from prelabel.labelstudio import LabelStudioError
    from prelabel.push import push_round
    from prelabel.review_sampling import check_strategy

    try:
        check_strategy(strategy, labels is not None)
        threshold_value = threshold_level(threshold)
    except ValueError as error:
        raise fail(str(error)) from None
    settings = settings_or_exit()
    client = ls_client(settings, url, api_key)
    engine = engine_or_exit(settings) if predict else None
    auth = None
    if settings.basic_auth_user and settings.basic_auth_pass:
        auth = (settings.basic_auth_user, settings.basic_auth_pass.get_secret_value())
    try:
        with console.status("labeling and pushing..."):
            result = push_round(
                client,
                label_config.read_text(encoding="utf-8"),
                project,
                pool,
                sample=sample,
                seed=seed,
                round_name=round_name,
                input_field=input_field,
                keep_fields=keep_field,
                engine=engine,
                backend_url=backend_url,
                basic_auth=auth,
                strategy=strategy,
                labels_path=labels,
                threshold=threshold_value,
            )
    except (LabelStudioError, InputError, OSError, ValueError) as error:
        raise fail(str(error)) from None
    finally:
        if engine is not None:
            engine.close()

    table = Table(title=f"{project}: {result.round}")
    for column in ("task", "source", "predicted", "inclusion probability"):
        table.add_column(column)
    for task_id, source, probability in zip(result.task_ids, result.source_ids, result.inclusion_probabilities):
        table.add_row(str(task_id), source, "yes" if predict else "by backend", f"{probability:.4g}")
    console.print(table)
    span = result.probability_range
    if span is not None:
        low, high = span
        where = f" ({result.basis})" if result.basis else ""
        console.print(
            f"strategy {result.strategy}{where}: {len(result.task_ids)} of {result.candidates} candidates, "
            + (
                f"inclusion probability {low:.4g}"
                if low == high
                else f"inclusion probabilities {low:.4g} to {high:.4g}"
            )
        )
    if result.unrated_candidates:
        console.print(
            f"[yellow]{result.unrated_candidates} candidates have no judge's rating in {escape(str(labels))}: "
            "they count as unrated[/yellow]"
        )
    if result.from_labels:
        console.print(f"{result.from_labels} predictions are the labels of {escape(str(labels))}")
    console.print(
        f"pushed {len(result.task_ids)} tasks ({result.pool_size} in the pool, {result.already_pushed} pushed before); "
        f"{result.predicted} with predictions"
        + (f", model_version {result.model_version}" if result.model_version else "")
    )
    if result.outcomes.total:
        print_tally(result.outcomes, "predictions")
    for problem in result.skipped:
        console.print(f"[yellow]{escape(problem)}[/yellow]")
    console.print(f"review at {client.url}/projects/{result.project_id}/data")
