"""`prelabel label`: label a whole pool into a JSONL file, resumable, with a cost estimate (--dry-run)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from prelabel.concurrency import MAX_CONCURRENCY
from prelabel.scripts.common import console, fail, label_config_path, ls_client, print_tally, settings_or_exit
from prelabel.scripts.table_layout import Table

if TYPE_CHECKING:
    from prelabel.label_interface import LabelConfig
    from prelabel.labeling import live
    from prelabel.labeling.batch import BatchSummary
    from prelabel.labeling.live import BulkSummary
    from prelabel.labelstudio import LabelStudioClient
    from prelabel.settings import Settings


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} items/s" if speed else "- items/s", style="cyan")


def label(
    input: Annotated[Path, typer.Option("--input", "-i", help="the pool: JSONL, JSON or CSV")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL of results; rerun to resume")],
    label_config: Annotated[Path, typer.Option("--label-config", "-c", help="Label Studio config XML")] = (
        label_config_path("summarization")
    ),
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_CONCURRENCY, help="items in flight (default PRELABEL_CONCURRENCY)"),
    ] = None,
    input_field: Annotated[str | None, typer.Option(help="field of the input (default: the config's)")] = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            help="try items that failed in an earlier run again, and rate again those a passing judge failure "
            "left unrated"
        ),
    ] = True,
    relabel: Annotated[
        bool,
        typer.Option(
            "--relabel",
            help="the output holds labels of another model_version (a prompt or a model changed): label those "
            "items again under this one, replacing their lines (without it such an output is refused)",
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="estimate tokens and cost; call nothing")] = False,
    sample: Annotated[int, typer.Option(min=1, help="items sampled for --dry-run")] = 200,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    project: Annotated[
        str | None,
        typer.Option(
            help="Label Studio project (title, created if absent, or id): import the results as tasks with "
            "predictions; a rerun adds only what is missing"
        ),
    ] = None,
    batch_api: Annotated[
        bool,
        typer.Option(
            "--batch-api",
            help="submit OpenAI Batch / Anthropic Message Batches jobs (half price, up to 24 h) "
            "instead of live calls; job ids are kept in OUTPUT.batch.json, rerun to resume",
        ),
    ] = False,
    batch_poll: Annotated[float, typer.Option(min=0.01, help="seconds between batch status checks")] = 30.0,
    batch_wait: Annotated[
        bool, typer.Option(help="wait for the batch jobs; --no-batch-wait submits, collects what has ended, and exits")
    ] = True,
) -> None:
    """Label every item of a pool (annotator, then judge) into a JSONL file. Rerun the same command to resume."""
    from prelabel.label_interface import LabelConfigError, parse_label_config
    from prelabel.labeling.output import OutputRefused, claim_output, refuse_same_file
    from prelabel.pricing import PriceFileError
    from prelabel.prompts import PromptError
    from prelabel.tasks_io import TaskFileError

    settings = settings_or_exit()
    client = ls_client(settings, None, None) if project and not dry_run else None  # fail before any LLM call
    with ExitStack() as held:
        try:
            refuse_same_file(input, output)
            config = parse_label_config(label_config.read_text(encoding="utf-8"))
            if dry_run:
                _dry_run(settings, config, input, output, input_field, retry_failed, sample, batch_api)
                return
            held.enter_context(claim_output(output))  # one run per output, until its results are imported
            batch_summary: BatchSummary | None = None
            summary: BulkSummary
            if batch_api:
                summary = batch_summary = _run_batch(
                    settings, config, input, output, input_field, retry_failed, relabel, batch_poll, batch_wait
                )
            else:
                summary = _run(
                    settings, config, input, output, concurrency, input_field, retry_failed, relabel, progress
                )
        except (LabelConfigError, TaskFileError, PromptError, PriceFileError, OutputRefused, OSError) as error:
            raise fail(str(error)) from None
        _print_summary(summary)
        if batch_summary is not None:
            _print_batch(batch_summary)
        if client is not None and project is not None and not summary.interrupted and summary.stop_reason is None:
            _push_output(
                client, project, label_config, input, output, input_field or config.data_key, summary.model_version
            )
    code = exit_code(summary, batch=batch_summary is not None)
    if code:
        raise typer.Exit(code)


def exit_code(summary: BulkSummary, batch: bool = False) -> int:
    """130 when interrupted; 1 when anything failed, was not done, or a fault stopped the run; else 0."""
    if summary.interrupted:
        return 130
    if batch:  # a batch run reads the whole input and leaves its pending jobs to the next run
        return 1 if summary.failed or summary.stop_reason or summary.unwritten else 0
    return 0 if summary.ok else 1


def _run(
    settings: Settings,
    config: LabelConfig,
    input: Path,
    output: Path,
    concurrency: int | None,
    input_field: str | None,
    retry_failed: bool,
    relabel: bool,
    show_progress: bool,
) -> BulkSummary:
    from prelabel.costs import UsageMeter, format_usd
    from prelabel.engine import build_engine, close_engine
    from prelabel.families import SameFamilyError
    from prelabel.labeling.items import count_records
    from prelabel.labeling.live import label_file
    from prelabel.labeling.output import prepare_output
    from prelabel.pricing import load_prices
    from prelabel.providers import ProviderError

    meter = UsageMeter(load_prices(settings.prelabel_prices))
    try:
        engine = build_engine(settings, meter)
    except (SameFamilyError, ProviderError) as error:
        raise fail(str(error)) from None
    try:
        version = engine.labeler(config).model_version
        # Refusals (not a prelabel output, another model_version) come here, before the progress bar shows.
        before = prepare_output(output, retry_failed, repair=False, model_version=version, relabel=relabel)
        total = count_records(input)
    except BaseException:
        close_engine(engine)
        raise
    done_before = len(before.done)
    bar = Progress(
        TextColumn("[bold]labeling"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[usage]}"),
        console=console,
        disable=not show_progress,
        refresh_per_second=4,
    )
    task_id = bar.add_task("labeling", total=total, completed=done_before, usage="")
    lock = threading.Lock()

    def on_progress(snapshot: live.Progress) -> None:
        with lock:
            usage = f"{snapshot.tokens:,} tokens {format_usd(snapshot.cost_usd)}"
            if snapshot.failed:
                usage += f" [red]{snapshot.failed} failed[/red]"
            bar.update(task_id, completed=done_before + snapshot.done, usage=usage)

    try:
        with bar:
            return label_file(
                settings,
                config,
                input,
                output,
                concurrency=concurrency,
                input_field=input_field,
                retry_failed=retry_failed,
                relabel=relabel,
                on_progress=on_progress,
                engine=engine,
                meter=meter,
            )
    finally:
        close_engine(engine)


def _push_output(
    client: LabelStudioClient,
    project: str,
    label_config: Path,
    input: Path,
    output: Path,
    input_field: str,
    model_version: str | None,
) -> None:
    """The labeled pool into a Label Studio project, in batches; tasks already there (by source id) are kept."""
    from prelabel.dialogue import InputError
    from prelabel.labelstudio import LabelStudioError
    from prelabel.push import import_outcomes, labeled_output_items

    try:
        with console.status(f"importing into Label Studio project {project!r}..."):
            done = import_outcomes(
                client,
                project,
                label_config.read_text(encoding="utf-8"),
                labeled_output_items(input, output, input_field),
                round_name="label",
                input_field=input_field,
                model_version=model_version,
            )
    except (LabelStudioError, InputError, OSError, ValueError) as error:
        raise fail(f"--project: {error}") from None
    console.print(
        f"Label Studio project {done.project_id}: {len(done.task_ids):,} new tasks, "
        f"{done.predictions_on_new_tasks + done.predictions_added:,} predictions imported, "
        f"{done.already_present:,} already there, {len(done.not_predicted):,} items without a label"
    )
    print_tally(done.outcomes, "imported labels")
    console.print(f"review weakest first: {client.url}/projects/{done.project_id}/data?tab={done.view_id}")


def _print_summary(summary: BulkSummary) -> None:
    from prelabel.costs import format_usd

    table = Table(title=f"prelabel label -> {summary.output}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(
        "labeled this run", f"{summary.labeled:,}" + (f" ({summary.unrated:,} unrated)" if summary.unrated else "")
    )
    unwritten = f" ({summary.unwritten:,} not written)" if summary.unwritten else ""
    table.add_row("failed", f"{summary.failed:,}{unwritten}")
    if summary.not_done:
        table.add_row("not done (stopped before they started)", f"{summary.not_done:,}")
    table.add_row("done in earlier runs", f"{summary.already_done:,}")
    if summary.retried_failed:
        table.add_row("earlier failures tried again", f"{summary.retried_failed:,}")
    if summary.rerated:
        table.add_row("earlier unrated items rated again", f"{summary.rerated:,}")
    for version, count in summary.relabeled.items():
        table.add_row(f"labeled again (were {version})", f"{count:,}")
    if summary.duplicates:
        table.add_row("repeated source ids skipped", f"{summary.duplicates:,}")
    table.add_row("time", f"{summary.elapsed_s:,.1f} s ({summary.items_per_s:,.1f} items/s)")
    for usage in summary.usage:
        table.add_row(
            f"{usage.role} {usage.model}",
            f"{usage.calls:,} calls, {usage.input_tokens:,} in / {usage.output_tokens:,} out, "
            f"{format_usd(usage.cost_usd)}",
        )
    table.add_row("cost", format_usd(summary.cost_usd))
    table.add_row("model_version", summary.model_version)
    console.print(table)
    if summary.outcomes.total:
        print_tally(summary.outcomes, "this run's items")
    if summary.dropped_partial_line:
        console.print(
            "[yellow]an unfinished last line of an earlier run was removed; that item was labeled again[/yellow]"
        )
    for failure in summary.failures:
        console.print(f"[red]failed[/red] {escape(failure)}", highlight=False)
    if summary.failed > len(summary.failures):
        console.print(f"... and {summary.failed - len(summary.failures):,} more")
    if summary.failed > summary.unwritten:
        console.print(
            f'every failure is in {summary.output} with "error" set; rerun the same command to try them again'
        )
    for note in summary.notes:
        console.print(f"[yellow]note: {escape(note)}[/yellow]", highlight=False)
    for problem in summary.problems:
        console.print(f"[red]{escape(problem)}[/red]", highlight=False)
    if summary.stop_reason is not None:
        console.print(
            f"[red]stopped: {escape(summary.stop_reason)}[/red]\nno paid call was made after it (the items "
            "already in flight finished). Fix it and rerun the same command: answers already in the cache are "
            "not paid for again",
            highlight=False,
        )
    if summary.interrupted:
        console.print("[yellow]interrupted: rerun the same command to continue[/yellow]")


def _dry_run(
    settings: Settings,
    config: LabelConfig,
    input: Path,
    output: Path,
    input_field: str | None,
    retry_failed: bool,
    sample: int,
    batch: bool,
) -> None:
    from prelabel.costs import estimate_cost, format_usd
    from prelabel.labeling.items import iter_items
    from prelabel.labeling.output import prepare_output, previous_records

    state = prepare_output(output, retry_failed, repair=False)
    field = input_field or config.data_key
    seen: set[str] = set()

    def remaining() -> Iterator[dict[str, Any]]:
        for item in iter_items(input, field):
            if item.source_id in state.done or item.source_id in seen or item.task is None:
                continue
            seen.add(item.source_id)
            yield item.task

    estimate = estimate_cost(
        settings,
        config,
        remaining(),
        done=len(state.done),
        sample_size=sample,
        previous=previous_records(output, sample),
        batch=batch,
    )
    table = Table(
        title=f"estimate for {estimate.remaining:,} items ({estimate.done:,} already done, {estimate.sampled} sampled)"
    )
    table.add_column("")
    for role in estimate.roles:
        table.add_column(f"{role.role}\n{role.model}", justify="right")
    rows = [
        ("tokenizer", lambda r: r.tokenizer),
        ("input tokens / item", lambda r: f"{r.input_tokens_per_item:,.1f}"),
        ("output tokens / item", lambda r: f"{r.output_tokens_per_item:,.1f}"),
        ("output from", lambda r: r.output_basis),
        ("input tokens", lambda r: f"{r.input_tokens:,}"),
        ("output tokens", lambda r: f"{r.output_tokens:,}"),
        ("USD / 1M in, out", lambda r: f"{r.price.input:g}, {r.price.output:g}" if r.price else "unknown"),
        ("cost", lambda r: format_usd(r.cost_usd)),
        ("cost at max_tokens", lambda r: format_usd(r.cost_upper_usd)),
    ]
    for name, value in rows:
        table.add_row(name, *(value(role) for role in estimate.roles))
    console.print(table)
    console.print(f"estimated cost: {format_usd(estimate.cost_usd)} (at most {format_usd(estimate.cost_upper_usd)})")
    for note in estimate.notes:
        console.print(f"[dim]{note}[/dim]")


def _run_batch(
    settings: Settings,
    config: LabelConfig,
    input: Path,
    output: Path,
    input_field: str | None,
    retry_failed: bool,
    relabel: bool,
    poll: float,
    wait: bool,
) -> BatchSummary:
    from prelabel.costs import UsageMeter
    from prelabel.engine import build_engine, close_engine
    from prelabel.families import SameFamilyError
    from prelabel.labeling.batch import BatchOptions, BatchStateError, label_file_batch, refuse_jury
    from prelabel.labeling.output import prepare_output
    from prelabel.pricing import load_prices
    from prelabel.providers import ProviderError
    from prelabel.providers.batch import BatchError

    try:
        refuse_jury(settings)  # before anything is built or the output touched
    except BatchError as error:
        raise fail(str(error)) from None
    meter = UsageMeter(load_prices(settings.prelabel_prices))
    try:
        engine = build_engine(settings, meter)
    except (SameFamilyError, ProviderError) as error:
        raise fail(str(error)) from None
    try:
        # The output is checked and repaired here, where this run's model_version is known (refused when it
        # changed, or its old lines dropped with --relabel); the batch run then finds only lines to keep.
        version = engine.labeler(config).model_version
        state = prepare_output(output, retry_failed, model_version=version, relabel=relabel)
        summary = label_file_batch(
            settings,
            config,
            input,
            output,
            options=BatchOptions(poll_interval_s=poll, wait=wait),
            input_field=input_field,
            retry_failed=retry_failed,
            on_event=lambda message: console.print(message),
            engine=engine,
            meter=meter,
        )
    except (SameFamilyError, ProviderError, BatchError, BatchStateError) as error:
        raise fail(str(error)) from None
    finally:
        close_engine(engine)
    summary.retried_failed = state.retrying
    summary.rerated = state.rerating
    summary.relabeled = state.relabeling
    summary.dropped_partial_line = state.dropped_partial_line
    return summary


def _print_batch(summary: BatchSummary) -> None:
    if summary.jobs_resumed:
        console.print(f"resumed batch jobs: {', '.join(summary.jobs_resumed)}")
    if summary.jobs_submitted:
        console.print(f"submitted batch jobs: {', '.join(summary.jobs_submitted)}")
    if summary.cache_hits or summary.resubmitted or summary.live_retries:
        console.print(
            f"{summary.cache_hits:,} answers from the cache, {summary.resubmitted:,} requests resubmitted "
            f"after their batch ended without them, {summary.live_retries:,} unusable answers asked again live"
        )
    if summary.jobs_pending:
        console.print(
            f"[yellow]{len(summary.jobs_pending)} batch job(s) still running ({summary.state_file}): "
            "rerun the same command to collect them[/yellow]"
        )


if __name__ == "__main__":  # `python -m prelabel.scripts.label ...`, the same command without the prelabel entry point
    typer.run(label)
