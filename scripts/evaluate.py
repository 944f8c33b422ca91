"""`prelabel evaluate`, `compare` and `report`: prompt versions measured on one fixed evaluation set."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from prelabel.scripts.common import (
    console,
    engine_or_exit,
    fail,
    label_config_path,
    ls_client,
    print_tally,
    settings_or_exit,
)

if TYPE_CHECKING:
    from prelabel.evaluation.compare import Comparison
    from prelabel.evaluation.evalset import EvalSet
    from prelabel.evaluation.report import ReportData
    from prelabel.evaluation.results import ItemResult
    from prelabel.label_interface import LabelConfig
    from prelabel.labelstudio import LabelStudioClient
    from prelabel.prompts import PromptRegistry


# The report options evaluate, compare and report share; a value given is kept with the run for the next command.
SliceFieldOption = Annotated[
    list[str] | None,
    typer.Option(help="task data field to slice results by (repeatable) (default: the run's fields)"),
]
KappaOption = Annotated[
    float | None,
    typer.Option(help="warn when judge-vs-reviewer weighted kappa is below this (default: the run's, else 0.4)"),
]
MinSliceOption = Annotated[
    int | None,
    typer.Option(help="rated items a slice needs to count as a worst slice (default: the run's, else 5)"),
]


def _parse_prompt_option(value: str, registry: PromptRegistry) -> tuple[str, Path]:
    """NAME=TEMPLATE_PATH, or NAME alone for a version stored by the backend (`prelabel prompts`)."""
    from prelabel.prompts import PromptError

    name, sep, path = value.partition("=")
    if not name.strip() or (sep and not path.strip()):
        raise fail(f"--prompt {value!r}: expected NAME=TEMPLATE_PATH or the NAME of a stored version")
    if not sep:
        try:
            return name.strip(), registry.path_of(name.strip())
        except PromptError as error:
            raise fail(str(error)) from None
    return name.strip(), Path(path.strip())


def _push_results(
    client: LabelStudioClient,
    project: str,
    label_config_xml: str,
    the_set: EvalSet,
    results: dict[str, list[ItemResult]],
    input_field: str,
) -> None:
    """The evaluation set into a Label Studio project, one prediction per version evaluated in this run."""
    from prelabel.labelstudio import LabelStudioError
    from prelabel.push import import_outcomes, outcome_from_record

    by_version = {name: {item.source_id: item for item in items} for name, items in results.items()}
    pairs = [
        (item, [outcome_from_record(by_version[name][item.source_id]) for name in by_version]) for item in the_set.items
    ]
    last = list(results.values())[-1] if results else []
    try:
        with console.status(f"pushing {len(pairs)} items to Label Studio project {project!r}..."):
            done = import_outcomes(
                client,
                project,
                label_config_xml,
                pairs,
                round_name=f"eval-{the_set.sha256[:8]}",
                input_field=input_field,
                model_version=last[0].model_version if last else None,
            )
    except (LabelStudioError, ValueError) as error:
        raise fail(f"--push-project: {error}") from None
    console.print(
        f"pushed to project {done.project_id}: {len(done.task_ids)} new tasks with {done.predictions_on_new_tasks} "
        f"predictions, {done.predictions_added} predictions added to earlier tasks, {done.already_present} "
        f"already there; project model_version {done.model_version}"
    )
    print_tally(done.outcomes, "imported labels")
    for problem in done.skipped:
        console.print(f"[yellow]{problem}[/yellow]")
    console.print(f"review weakest first: {client.url}/projects/{done.project_id}/data?tab={done.view_id}")


def _report_data(
    run_dir: Path,
    comparisons: list[Comparison],
    slice_fields: list[str] | None,
    reviews: Path | None,
    config: LabelConfig | None,
    kappa_threshold: float | None,
    min_slice: int | None,
) -> ReportData:
    """The report's data. Options not given are the run's (what the last command gave); given ones replace
    them and are kept, reviews included, so a later `compare` or `report` rebuilds the same complete report."""
    from prelabel.evaluation.calibration import judge_calibration
    from prelabel.evaluation.report import ReportData
    from prelabel.evaluation.reviews import load_reviews
    from prelabel.evaluation.runs import load_run, save_reviews, save_run, saved_reviews
    from prelabel.evaluation.slices import slice_run

    run = load_run(run_dir)
    options = run.report
    if slice_fields is not None:
        options.slice_fields = list(dict.fromkeys(slice_fields))
    if min_slice is not None:
        options.min_slice = min_slice
    if kappa_threshold is not None:
        options.kappa_threshold = kappa_threshold
    if reviews is not None:
        records = load_reviews(reviews, config)
        save_reviews(run_dir, records)
        options.reviews_from = str(reviews)
    else:
        records = saved_reviews(run_dir)
    save_run(run_dir, run)
    return ReportData(
        run=run,
        comparisons=comparisons,
        slices=slice_run(run_dir, options.slice_fields, records, min_n=options.min_slice),
        calibration=judge_calibration(records, options.kappa_threshold) if records else None,
    )


def _print_report(data: ReportData, html_path: Path, md_path: Path) -> None:
    from prelabel.scripts.tables import (
        baselines_table,
        calibration_table,
        classification_tables,
        comparisons_table,
        jury_agreement_table,
        length_bias_table,
        movers_table,
        versions_table,
        worst_slices_table,
    )

    if data.run.family_warning:
        console.print(f"[yellow]same-family judge: {data.run.family_warning}[/yellow]")
    console.print(versions_table(data.run))
    length_bias = length_bias_table(data.run)
    if length_bias is not None:
        console.print(length_bias)
    jury = jury_agreement_table(data.run)
    if jury is not None:
        console.print(jury)
    baselines = baselines_table(data.run)
    if baselines is not None:
        console.print(baselines)
    for table in classification_tables(data.run):
        console.print(table)
    if data.comparisons:
        console.print(comparisons_table(data.comparisons))
        for comparison in data.comparisons:
            if comparison.movers:
                console.print(movers_table(comparison))
    for report in data.slices.values():
        if report.worst:
            console.print(worst_slices_table(report))
    if data.calibration is not None:
        console.print(calibration_table(data.calibration))
        if data.calibration.warning:
            console.print(f"[bold red]{data.calibration.warning}[/bold red]")
    ranking = data.run.ranking()
    if ranking and ranking[0].mean_level is not None:
        console.print(f"best version: [bold]{ranking[0].name}[/bold] (mean level {ranking[0].mean_level:.2f})")
    console.print(f"report: {html_path} and {md_path}")


def evaluate(
    pool: Annotated[Path, typer.Argument(help="the unlabeled pool: JSONL, JSON or CSV")],
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=ANNOTATOR_TEMPLATE_PATH, or the NAME of a stored version (`prelabel prompts`); "
            "one per prompt version (repeatable)"
        ),
    ] = None,
    judge_prompt: Annotated[
        Path | None, typer.Option(help="judge template (default PRELABEL_JUDGE_PROMPT or the packaged one)")
    ] = None,
    label_config: Annotated[Path, typer.Option("--label-config", "-c", help="Label Studio config XML")] = (
        label_config_path("summarization")
    ),
    eval_set: Annotated[
        Path | None, typer.Option(help="evaluation set file: drawn once, reused verbatim (default OUT/eval_set.jsonl)")
    ] = None,
    size: Annotated[int, typer.Option(help="items to draw for a new evaluation set")] = 500,
    seed: Annotated[int, typer.Option(help="random seed of the draw")] = 0,
    out: Annotated[Path, typer.Option(help="run directory: per-item results, summary.json, reports")] = Path(
        "evaluation"
    ),
    input_field: Annotated[
        str | None, typer.Option(help="field of the input in the pool (default the config's)")
    ] = None,
    reference_field: Annotated[str | None, typer.Option(help="field holding reference labels or ground truth")] = None,
    slice_field: SliceFieldOption = None,
    reviews: Annotated[
        Path | None,
        typer.Option(
            help="corrections JSONL from pull (or a Label Studio JSON export) for judge calibration and edit slices"
        ),
    ] = None,
    kappa_threshold: KappaOption = None,
    min_slice: MinSliceOption = None,
    fewshot_corrections: Annotated[
        Path | None,
        typer.Option(help="corrections JSONL: add the most similar corrected examples to the annotator prompt"),
    ] = None,
    fewshot_k: Annotated[int, typer.Option(help="few-shot examples per input")] = 3,
    push_project: Annotated[
        str | None,
        typer.Option(
            help="Label Studio project (title, created if absent, or id): import the evaluation set with every "
            "version's predictions of this run, scored by the judge, to review the weakest first"
        ),
    ] = None,
) -> None:
    """Label and judge a fixed evaluation set with each prompt version; summarise, compare and report."""
    from prelabel.evaluation import EvaluationError
    from prelabel.evaluation.compare import compare_run
    from prelabel.evaluation.evalset import load_or_create_eval_set
    from prelabel.evaluation.report import write_reports
    from prelabel.evaluation.runs import open_run, save_version
    from prelabel.evaluation.summary import run_version
    from prelabel.fewshot import FewShotError, TfidfIndex, fewshot_labeler, load_corrections
    from prelabel.label_interface import LabelConfigError, parse_label_config
    from prelabel.pricing import PriceFileError, load_prices
    from prelabel.prompts import PromptError, PromptRegistry, PromptSet
    from prelabel.tasks_io import TaskFileError

    settings = settings_or_exit()
    registry = PromptRegistry(settings.model_dir, settings.store_path)
    versions = [_parse_prompt_option(value, registry) for value in prompt or []]
    names = [name for name, _ in versions]
    if len(set(names)) != len(names):
        raise fail("--prompt: each prompt version needs its own NAME")
    try:
        config = parse_label_config(label_config.read_text(encoding="utf-8"))
        field = input_field or config.data_key
        for name, path in versions:
            stored = registry.get(name)
            if stored is not None and Path(stored.path) == path and stored.kind != config.kind:
                raise PromptError(
                    f"prompt version {name!r} was written for {stored.kind}, but "
                    f"{label_config.name} is a {config.kind} config"
                )
        judge_path = judge_prompt or settings.prelabel_judge_prompt
        prompt_sets = [PromptSet.load(config.kind, path, judge_path, name) for name, path in versions] or [
            PromptSet.load(config.kind, settings.prelabel_annotator_prompt, judge_path, settings.prelabel_prompt_name)
        ]
        index = TfidfIndex(load_corrections(fewshot_corrections)) if fewshot_corrections else None
        prices = load_prices(settings.prelabel_prices)
        the_set = load_or_create_eval_set(eval_set or out / "eval_set.jsonl", pool, field, size, seed)
    except (
        LabelConfigError,
        PromptError,
        FewShotError,
        PriceFileError,
        EvaluationError,
        TaskFileError,
        OSError,
    ) as error:
        raise fail(str(error)) from None
    console.print(
        f"{'drew' if the_set.created else 'reusing'} evaluation set {the_set.path}: {len(the_set.items)} items"
        + (f" of {the_set.pool_size} (seed {seed})" if the_set.created else " (--size and --seed ignored)")
        + f", sha256 {the_set.sha256[:12]}"
    )

    client = ls_client(settings, None, None) if push_project else None  # fail before any LLM call
    results: dict[str, list[ItemResult]] = {}
    engine = engine_or_exit(settings)
    try:
        if engine.family_warning:
            console.print(f"[yellow]same-family judge: {engine.family_warning}[/yellow]")
        try:
            run = open_run(out, the_set, config, field, reference_field, engine.family_warning)
        except EvaluationError as error:
            raise fail(str(error)) from None
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            for prompts in prompt_sets:
                fewshot = None
                if index is not None:
                    labeler = fewshot_labeler(engine, config, prompts, index, fewshot_k)
                    fewshot = f"k={fewshot_k} from {fewshot_corrections} ({len(index.examples)} corrections)"
                else:
                    labeler = engine.labeler(config, prompts=prompts)
                bar = progress.add_task(f"{prompts.name}", total=len(the_set.items))
                try:
                    items, summary = run_version(
                        engine,
                        labeler,
                        prompts.name,
                        the_set,
                        input_field=field,
                        reference_field=reference_field,
                        fewshot=fewshot,
                        progress=partial(progress.advance, bar),
                        prices=prices,
                    )
                except EvaluationError as error:
                    raise fail(str(error)) from None
                save_version(out, run, items, summary)
                results[prompts.name] = items
    finally:
        engine.close()

    try:
        comparisons = compare_run(out) if len(run.versions) > 1 else []
        data = _report_data(out, comparisons, slice_field, reviews, config, kappa_threshold, min_slice)
    except (EvaluationError, OSError, ValueError) as error:
        raise fail(str(error)) from None
    html_path, md_path = write_reports(out, data)
    _print_report(data, html_path, md_path)
    if client is not None and push_project is not None:  # after the reports: a refused push loses nothing
        _push_results(client, push_project, label_config.read_text(encoding="utf-8"), the_set, results, field)


def compare(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by evaluate")],
    base: Annotated[str | None, typer.Option(help="base version (default the first evaluated)")] = None,
    candidate: Annotated[str | None, typer.Option(help="candidate version (default every other version)")] = None,
    movers: Annotated[int, typer.Option(help="how many most-moved items to list")] = 10,
    slice_field: SliceFieldOption = None,
    reviews: Annotated[
        Path | None,
        typer.Option(help="corrections JSONL from pull for judge calibration (default: the reviews the run keeps)"),
    ] = None,
    kappa_threshold: KappaOption = None,
    min_slice: MinSliceOption = None,
) -> None:
    """Prompt versions side by side on the same items: paired difference with a bootstrap CI, biggest movers."""
    from prelabel.evaluation import EvaluationError
    from prelabel.evaluation.compare import compare_run
    from prelabel.evaluation.report import write_reports

    try:
        comparisons = compare_run(run_dir, base, candidate, n_movers=movers)
        if not comparisons:
            raise EvaluationError(f"{run_dir}: nothing to compare, evaluate at least two prompt versions")
        data = _report_data(run_dir, comparisons, slice_field, reviews, None, kappa_threshold, min_slice)
    except (EvaluationError, OSError, ValueError) as error:
        raise fail(str(error)) from None
    (run_dir / "comparisons.json").write_text(
        json.dumps([c.model_dump(mode="json") for c in comparisons], indent=2), encoding="utf-8"
    )
    html_path, md_path = write_reports(run_dir, data)
    _print_report(data, html_path, md_path)


def report(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by evaluate")],
    slice_field: SliceFieldOption = None,
    reviews: Annotated[
        Path | None,
        typer.Option(
            help="corrections JSONL from pull, or a Label Studio JSON export (with --label-config) "
            "(default: the reviews the run keeps)"
        ),
    ] = None,
    label_config: Annotated[
        Path | None, typer.Option("--label-config", "-c", help="config XML, to read a Label Studio export")
    ] = None,
    kappa_threshold: KappaOption = None,
    min_slice: MinSliceOption = None,
) -> None:
    """Write the HTML and Markdown reports of a run again: subsets, comparisons, judge calibration."""
    from prelabel.evaluation import EvaluationError
    from prelabel.evaluation.compare import compare_run
    from prelabel.evaluation.report import write_reports
    from prelabel.evaluation.runs import load_run
    from prelabel.label_interface import LabelConfigError, parse_label_config

    try:
        config = parse_label_config(label_config.read_text(encoding="utf-8")) if label_config else None
        comparisons = compare_run(run_dir) if len(load_run(run_dir).versions) > 1 else []
        data = _report_data(run_dir, comparisons, slice_field, reviews, config, kappa_threshold, min_slice)
    except (EvaluationError, LabelConfigError, OSError, ValueError) as error:
        raise fail(str(error)) from None
    html_path, md_path = write_reports(run_dir, data)
    _print_report(data, html_path, md_path)
