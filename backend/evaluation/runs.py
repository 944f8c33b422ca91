"""The run directory: summary.json (the evaluation set it measured, every version evaluated on it, and how its
report is built), items/<version>.jsonl, one per version, and reviews.jsonl, the reviewers' records the report
was last given, so `compare` and `report` rebuild the complete report without repeating their options."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from prelabel.atomic import write_atomic
from prelabel.evaluation import EvaluationError
from prelabel.evaluation.evalset import EvalSet
from prelabel.evaluation.results import ItemResult
from prelabel.evaluation.summary import VersionSummary
from prelabel.label_interface import LabelConfig, TaskKind
from prelabel.records import ReviewedTask

SUMMARY_FILE = "summary.json"
ITEMS_DIR = "items"
REVIEWS_FILE = "reviews.jsonl"


class ReportOptions(BaseModel):
    """How the run's report is built; the last command that set an option keeps it for the next."""

    slice_fields: list[str] = []
    min_slice: int = 5
    kappa_threshold: float = 0.4
    reviews_from: str | None = None  # the file the reviews were read from (copied into REVIEWS_FILE)


class RunSummary(BaseModel):
    """summary.json of a run directory: the evaluation set it measured and every version evaluated on it."""

    eval_set: str
    eval_set_sha256: str
    n_items: int
    kind: TaskKind
    data_key: str
    input_field: str
    class_labels: list[str] = []
    reference_field: str | None = None
    family_warning: str | None = None
    versions: dict[str, VersionSummary] = {}  # in the order first evaluated; compare uses the first as base
    report: ReportOptions = ReportOptions()

    def ranking(self) -> list[VersionSummary]:
        """Best first: by mean level, then share at good or better; versions without ratings last."""
        return sorted(
            self.versions.values(),
            key=lambda v: (v.mean_level is None, -(v.mean_level or 0.0), -(v.share_good or 0.0), v.name),
        )


def items_path(run_dir: Path, name: str) -> Path:
    return run_dir / ITEMS_DIR / f"{name}.jsonl"


def load_run(run_dir: Path) -> RunSummary:
    path = run_dir / SUMMARY_FILE
    if not path.exists():
        raise EvaluationError(f"{run_dir} holds no evaluation run ({SUMMARY_FILE} is missing): run evaluate first")
    return RunSummary.model_validate_json(path.read_text(encoding="utf-8"))


def open_run(
    run_dir: Path,
    eval_set: EvalSet,
    config: LabelConfig,
    input_field: str,
    reference_field: str | None,
    family_warning: str | None,
) -> RunSummary:
    """The run directory's summary, new or existing; refuses a directory measured on other items."""
    if (run_dir / SUMMARY_FILE).exists():
        run = load_run(run_dir)
        if run.eval_set_sha256 != eval_set.sha256:
            raise EvaluationError(
                f"{run_dir} was evaluated on another evaluation set ({run.eval_set}); versions in one run directory "
                "must be measured on the same items: use another --out or the same --eval-set"
            )
        if run.kind != config.kind:
            raise EvaluationError(f"{run_dir} holds a {run.kind} run, not {config.kind}")
        run.reference_field = reference_field or run.reference_field
        run.family_warning = family_warning or run.family_warning
        return run
    return RunSummary(
        eval_set=eval_set.path,
        eval_set_sha256=eval_set.sha256,
        n_items=len(eval_set.items),
        kind=config.kind,
        data_key=config.data_key,
        input_field=input_field,
        class_labels=config.class_labels,
        reference_field=reference_field,
        family_warning=family_warning,
    )


def save_version(run_dir: Path, run: RunSummary, items: Sequence[ItemResult], summary: VersionSummary) -> None:
    write_atomic(items_path(run_dir, summary.name), "".join(item_line(item) for item in items))
    run.versions[summary.name] = summary
    save_run(run_dir, run)


def item_line(item: ItemResult) -> str:
    """An item's line; a single judge's items leave out the jury's fields, as they did before juries."""
    return item.model_dump_json(exclude={"jury", "disagreement"} if item.jury is None else None) + "\n"


def save_run(run_dir: Path, run: RunSummary) -> None:
    write_atomic(run_dir / SUMMARY_FILE, run.model_dump_json(indent=2))


def load_items(run_dir: Path, name: str) -> list[ItemResult]:
    path = items_path(run_dir, name)
    if not path.exists():
        raise EvaluationError(f"{run_dir} has no results for version {name!r}")
    with path.open(encoding="utf-8") as handle:
        return [ItemResult.model_validate_json(line) for line in handle if line.strip()]


def save_reviews(run_dir: Path, records: Sequence[ReviewedTask]) -> None:
    """Keep the reviewers' records with the run (they replace any kept before)."""
    write_atomic(run_dir / REVIEWS_FILE, "".join(record.model_dump_json() + "\n" for record in records))


def saved_reviews(run_dir: Path) -> list[ReviewedTask]:
    """The reviewers' records kept with the run (none when no report was given reviews)."""
    path = run_dir / REVIEWS_FILE
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        return [ReviewedTask.model_validate_json(line) for line in handle if line.strip()]
