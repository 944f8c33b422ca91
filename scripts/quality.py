"""`prelabel quality`: how good the labeled dataset is, with a 95% interval, from the judge's ratings on every
item and reviewers' ratings on a sample (the rules: prelabel.quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box

from prelabel.scripts.common import console, fail, warn_problems
from prelabel.scripts.table_layout import Table

if TYPE_CHECKING:
    from prelabel.quality import QualityReport
    from prelabel.quality.inputs import Labels, Reviews
    from prelabel.quality.stats import Interval

PROBLEMS_SHOWN = 5


def _threshold(value: str) -> int:
    from prelabel.judge import threshold_level  # with pydantic's models: not for `prelabel --help`

    try:
        return threshold_level(value)
    except ValueError as error:
        raise fail(f"--threshold {value!r}: {error}") from None


def quality(
    labels: Annotated[
        Path | None, typer.Option(help="the labeled items: a `prelabel label` output (JSONL); or give --project")
    ] = None,
    reviews: Annotated[
        Path | None,
        typer.Option(
            help="the reviews: pull's corrections JSONL, or a Label Studio JSON export (default: --project's)"
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(help="a Label Studio project (id or title) whose tasks are the labeled items and their reviews"),
    ] = None,
    threshold: Annotated[
        str, typer.Option(help="the level a reviewer's rating must reach to count (very bad .. excellent)")
    ] = "good",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")] = False,
    target_width: Annotated[
        float, typer.Option(help="the width of the share's 95% interval to plan reviews for (0.05 = ±2.5 points)")
    ] = 0.05,
    assume_random: Annotated[
        bool,
        typer.Option(
            help="reviews without inclusion_probability are a uniform random sample of the labeled items "
            "(true of rounds pushed with a plain random --sample)"
        ),
    ] = False,
    html: Annotated[Path | None, typer.Option(help="also write an HTML report with a reliability chart")] = None,
    label_config: Annotated[
        Path | None,
        typer.Option("--label-config", "-c", help="Label Studio config of an export (default: the summarization one)"),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Label Studio URL, with --project (default LABEL_STUDIO_URL)")] = None,
    api_key: Annotated[str | None, typer.Option(help="token, with --project (default LABEL_STUDIO_API_KEY)")] = None,
) -> None:
    """How good is the dataset: the share of labels a reviewer would rate at least good, with a 95% interval."""
    from prelabel.quality import QualityInputError, build_report, read_labels, read_reviews

    level = _threshold(threshold)
    if not 0 < target_width < 1:
        raise fail(f"--target-width {target_width}: expected a width between 0 and 1 (0.05 = ±2.5 points)")
    if (labels is None) == (project is None):
        raise fail("give the labeled items: --labels LABELED.jsonl or --project PROJECT (one of them)")
    if labels is not None and reviews is None:
        raise fail("--labels needs --reviews (pull's corrections.jsonl or a Label Studio export)")
    try:
        if project is not None:
            labeled, reviewed = _project_inputs(project, url, api_key)
        else:
            assert labels is not None
            labeled = read_labels(labels)
        if reviews is not None:
            reviewed = read_reviews(reviews, label_config)
        with console.status("estimating..."):
            report = build_report(labeled, reviewed, level, assume_random=assume_random, target_width=target_width)
    except QualityInputError as error:
        raise fail(str(error)) from None
    if html is not None:
        from prelabel.quality.html import render_html

        try:
            html.write_text(
                render_html(report, title=f"prelabel quality: {labels.name if labels else project}"), encoding="utf-8"
            )
        except OSError as error:
            raise fail(f"--html {html}: {error.strerror or error}") from None
    _print_problems(report.problems)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    _print_report(report)
    if html is not None:
        console.print(f"HTML report: {html}")


def _print_problems(problems: list[str]) -> None:
    warn_problems(problems, "bad line(s) left out", PROBLEMS_SHOWN)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ci(interval: Interval | None, percent: bool) -> tuple[str, str]:
    if interval is None:
        return "-", "-"
    if percent:
        return f"{interval.estimate:.1%}", f"{interval.low:.1%}–{interval.high:.1%}"
    return f"{interval.estimate:.2f}", f"{interval.low:.2f}–{interval.high:.2f}"


def _print_report(report: QualityReport) -> None:
    out = console
    name = report.threshold_name
    table = Table(
        title=f"{report.n_items:,} labeled items, {report.n_reviewed:,} reviewed", box=box.SIMPLE_HEAD, pad_edge=False
    )
    table.add_column("figure", justify="left")
    table.add_column(f"≥ {name}", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("mean level", justify="right")
    table.add_column("95% interval", justify="right")
    share, mean = report.share_at_least, report.mean_level
    judge_mean = "-" if mean.judge_only is None else f"{mean.judge_only:.2f}"
    table.add_row("judge only (biased)", _pct(share.judge_only), "-", judge_mean, "-")
    table.add_row("reviewed only", *_ci(share.reviewed_only, True), *_ci(mean.reviewed_only, False))
    table.add_row("combined: quote this", *_ci(share.combined, True), *_ci(mean.combined, False))
    combined = share.combined
    table.caption = (
        f"share rated {name} or better, and mean level (0 very bad .. 4 excellent). judge only: the judge's own "
        "figure, leaning wherever the judge leans. reviewed only: reviewers' ratings on the sample. combined: the "
        "judge's ratings on every item corrected by the reviews; 95 in 100 such intervals hold the true figure."
    )
    out.print(table)
    if combined is not None:
        out.print(
            f"[bold]{combined.estimate:.1%}[/bold] of the {report.n_items:,} labels would be rated {name} or better "
            f"by a reviewer (95% interval {combined.low:.1%} – {combined.high:.1%}); method: {combined.method}",
            highlight=False,
        )

    kappa = report.agreement.kappa_quadratic
    agreement = "-" if kappa is None else f"{kappa.estimate:.2f} (95% interval {kappa.low:.2f} – {kappa.high:.2f})"
    out.print(
        f"judge vs reviewer: quadratic-weighted kappa {agreement} on {report.agreement.n_pairs} pairs "
        "(1 = perfect agreement, 0 = chance)",
        highlight=False,
    )

    calibration = Table(title="judge calibration: what reviewers said per judge level", box=box.SIMPLE_HEAD)
    for header in ("judge level", "labeled", "reviewed", "reviewer mean level", f"reviewer ≥ {name}"):
        calibration.add_column(header, justify="left" if header == "judge level" else "right")
    for row in report.calibration:
        calibration.add_row(
            f"{row.judge_level} {row.judge_rating}",
            f"{row.n_items:,}",
            str(row.n_reviewed),
            "-" if row.reviewer_mean_level is None else f"{row.reviewer_mean_level:.2f}",
            _pct(row.reviewer_share_at_least),
        )
    calibration.caption = "a well calibrated judge: the reviewer mean level close to the judge level on each row"
    out.print(calibration)

    needed = report.reviews_needed
    if needed is not None:
        if needed.reviews_total is None:
            text = (
                f"a {needed.target_width:.0%}-wide interval is out of reach with this judge: its own spread over "
                "the items is already wider; a better judge, not more reviews, would narrow it"
            )
        elif not needed.additional:
            text = f"the interval is already at most {needed.target_width:.1%} wide"
        else:
            alone = (
                ""
                if needed.reviewed_only_additional is None
                else f" (without the judge: {needed.reviewed_only_additional:,} more)"
            )
            text = (
                f"about {needed.additional:,} more reviews for a {needed.target_width:.1%}-wide interval{alone}; "
                f"assuming {needed.assumption}"
            )
            if needed.additional > report.n_items - report.n_reviewed:
                text += " (more than the items not yet reviewed: the target is out of reach for this dataset)"
        out.print(f"reviews needed: {text}", highlight=False)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _project_inputs(project: str, url: str | None, api_key: str | None) -> tuple[Labels, Reviews]:
    """A project's tasks: their LLM labels as the labeled items, their reviews as the reviews."""
    from prelabel.label_interface import LabelConfigError, parse_label_config
    from prelabel.labelstudio import LabelStudioError
    from prelabel.quality.inputs import QualityInputError, from_tasks
    from prelabel.records import reviewed_tasks
    from prelabel.scripts.common import ls_client, settings_or_exit

    client = ls_client(settings_or_exit(), url, api_key)
    try:
        project_id = client.project_id_for(project)
        config = parse_label_config(client.project(project_id).label_config)
        with console.status(f"exporting project {project_id} from Label Studio..."):
            tasks = reviewed_tasks(config, client.export(project_id))
    except (LabelStudioError, LabelConfigError) as error:
        raise fail(str(error)) from None
    labels, reviews = from_tasks(tasks)
    if not labels.items:
        raise QualityInputError(f"project {project}: no task holds an LLM label to measure")
    return labels, reviews
