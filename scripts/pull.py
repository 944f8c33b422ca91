"""`prelabel pull`: reviewers' corrections against the LLM's labels and the judge's ratings, per prompt version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from prelabel.records import ReviewedTask

from prelabel.scripts.common import console, fail, ls_client, settings_or_exit, warn_result_problems


def pull(
    project: Annotated[str, typer.Argument(help="Label Studio project: its id or its title (as push --project)")],
    corrections: Annotated[
        Path, typer.Option(help="write the corrections JSONL here (input, LLM label, corrected label, ratings)")
    ] = Path("corrections.jsonl"),
    report_json: Annotated[Path | None, typer.Option(help="also write the statistics as JSON")] = None,
    worst: Annotated[int, typer.Option(help="how many worst cases to list")] = 10,
    threshold: Annotated[str, typer.Option(help="the level the dataset's quality is stated at (as export's)")] = "good",
    assume_random: Annotated[
        bool, typer.Option(help="take reviews without a recorded inclusion probability as a uniform random sample")
    ] = False,
    url: Annotated[str | None, typer.Option(help="Label Studio URL (default LABEL_STUDIO_URL)")] = None,
    api_key: Annotated[str | None, typer.Option(help="token (default LABEL_STUDIO_API_KEY)")] = None,
) -> None:
    """Compare reviewers with the LLM and the judge; list the worst cases; write corrections for the next prompt."""
    from prelabel.judge import threshold_level
    from prelabel.label_interface import LabelConfigError, parse_label_config
    from prelabel.labelstudio import LabelStudioError
    from prelabel.records import result_problems, reviewed_tasks
    from prelabel.review_stats import pull_report, write_corrections_jsonl
    from prelabel.scripts.tables import review_versions_table, worst_cases_table

    try:
        level = threshold_level(threshold)
    except ValueError as error:
        raise fail(f"--threshold {threshold!r}: {error}") from None
    settings = settings_or_exit()
    client = ls_client(settings, url, api_key)
    try:
        project_id = client.project_id_for(project)
        config = parse_label_config(client.project(project_id).label_config)
        with console.status(f"exporting project {project_id} from Label Studio..."):
            records = reviewed_tasks(config, client.export(project_id))
        report = pull_report(
            records,
            config.kind,
            class_labels=config.class_labels,
            ls_url=client.url,
            project_id=project_id,
            worst_limit=worst,
        )
        written = write_corrections_jsonl(records, corrections)
        if report_json:
            report_json.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    except (LabelStudioError, LabelConfigError, OSError) as error:
        raise fail(str(error)) from None
    warn_result_problems(result_problems(records))
    console.print(review_versions_table(report))
    if report.worst_cases:
        console.print(worst_cases_table(report.worst_cases))
    console.print(f"{report.n_reviewed} of {report.n_tasks} tasks reviewed; {written} corrections in {corrections}")
    _print_quality(records, level, assume_random)


def _print_quality(records: list[ReviewedTask], threshold: int, assume_random: bool) -> None:
    """The quality of what export would write now, after each review round: the interval narrows as reviews
    accumulate."""
    from prelabel.quality.dataset import quality_by_round
    from prelabel.scripts.tables import quality_rounds_table

    by_round = quality_by_round(records, threshold, assume_random=assume_random)
    if not by_round:
        return
    console.print(quality_rounds_table(by_round))
    latest = by_round[-1][1]
    console.print(f"quality: {latest.statement()}", markup=False, highlight=False)
    for warning in latest.warnings:
        console.print(f"[yellow]note: {escape(warning)}[/yellow]", highlight=False)
