"""`prelabel pull`: reviewers' corrections against the LLM's labels and the judge's ratings, per prompt version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from prelabel.scripts.common import console, fail, ls_client, settings_or_exit, warn_result_problems


def pull(
    project: Annotated[str, typer.Argument(help="Label Studio project: its id or its title (as push --project)")],
    corrections: Annotated[
        Path, typer.Option(help="write the corrections JSONL here (input, LLM label, corrected label, ratings)")
    ] = Path("corrections.jsonl"),
    report_json: Annotated[Path | None, typer.Option(help="also write the statistics as JSON")] = None,
    worst: Annotated[int, typer.Option(help="how many worst cases to list")] = 10,
    url: Annotated[str | None, typer.Option(help="Label Studio URL (default LABEL_STUDIO_URL)")] = None,
    api_key: Annotated[str | None, typer.Option(help="token (default LABEL_STUDIO_API_KEY)")] = None,
) -> None:
    """Compare reviewers with the LLM and the judge; list the worst cases; write corrections for the next prompt."""
    from prelabel.label_interface import LabelConfigError, parse_label_config
    from prelabel.labelstudio import LabelStudioError
    from prelabel.records import result_problems, reviewed_tasks
    from prelabel.review_stats import pull_report, write_corrections_jsonl
    from prelabel.scripts.tables import review_versions_table, worst_cases_table

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
