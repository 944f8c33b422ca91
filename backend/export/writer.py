"""Writing a whole export: select, split, write every requested format with its provenance and manifest into
a staging folder beside the target, validate it, then swap it into place so the previous export stays whole
until the new one is complete."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prelabel.export import ExportError
from prelabel.export.formats import WRITERS, write_jsonl
from prelabel.export.layout import CARD, MANIFEST, MANIFEST_SCHEMA, PROVENANCE, example_id, file_sha256, line_count
from prelabel.export.options import ExportOptions, ExportReport, SelectionCounts, TrainingExample
from prelabel.export.selection import SPLITS, select_examples, split_examples
from prelabel.export.validation import validate_export
from prelabel.quality.dataset import DatasetQuality, dataset_quality
from prelabel.records import ReviewedTask


def export_dataset(tasks: Iterable[ReviewedTask], options: ExportOptions) -> ExportReport:
    """Select, split and write every requested format, its manifest and its dataset card (with the quality
    estimate, prelabel.quality.dataset), then swap the finished directory into place."""
    tasks = list(tasks)
    examples, counts = select_examples(tasks, options.threshold)
    if not examples:
        # An empty export would silently replace a useful one.
        raise ExportError(f"no task qualifies for export: {counts.model_dump()}")
    splits = split_examples(examples, options.validation_fraction, options.seed)
    quality = dataset_quality(tasks, options.threshold, assume_random=options.assume_random)

    target = Path(os.path.abspath(options.out_dir))
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir()
    try:
        written = _write_all(staging, splits, counts, options, quality)
        problems = validate_export(staging)
        if problems:
            raise ExportError("the export failed its own validation:\n" + "\n".join(problems))
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    return ExportReport(
        out_dir=target,
        counts=counts,
        splits={split: len(rows) for split, rows in splits.items()},
        origins=_origins(examples),
        files={name: target / name for name in written},
        manifest=target / MANIFEST,
        provenance=target / PROVENANCE,
        card=target / CARD,
        quality=quality,
        anchored_ratings=sum(1 for e in examples if e.rating_anchored),
    )


def _origins(examples: Sequence[TrainingExample]) -> dict[str, int]:
    return {origin: sum(1 for e in examples if e.origin == origin) for origin in ("human", "llm")}


def _check_replaceable(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")
    # Only a previous export (or an empty folder) is replaced: a mistyped --out must not wipe a project.
    if any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise ExportError(f"{target} is not empty and holds no {MANIFEST}: refusing to replace it")


def _write_all(
    folder: Path,
    splits: dict[str, list[TrainingExample]],
    counts: SelectionCounts,
    options: ExportOptions,
    quality: DatasetQuality,
) -> list[str]:
    assert options.instruction is not None
    written: list[Path] = []
    for name in options.formats:
        format_dir = folder / name
        format_dir.mkdir()
        for split in SPLITS:
            if splits[split]:  # no empty validation file: some trainers reject one outright
                written.append(WRITERS[name](format_dir, split, options.instruction, splits[split]))

    provenance = folder / PROVENANCE
    write_jsonl(provenance, _provenance_rows(splits))
    written.append(provenance)
    card = folder / CARD
    card.write_text(dataset_card(splits, options, quality), encoding="utf-8")
    written.append(card)

    files = {path.relative_to(folder).as_posix(): _file_entry(path) for path in written}
    all_examples = [e for split in SPLITS for e in splits[split]]
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "counts": {**counts.model_dump(), "exported": counts.exported, "total": counts.total},
        "splits": {split: len(splits[split]) for split in SPLITS},
        "origins": _origins(all_examples),
        # Reviewer ratings that started from the judge's pre-filled level (projects made before blind reviews).
        "anchored_ratings": sum(1 for e in all_examples if e.rating_anchored),
        "options": options.manifest_options(),
        "quality": {**quality.model_dump(mode="json"), "statement": quality.statement()},
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return list(files)


def dataset_card(splits: dict[str, list[TrainingExample]], options: ExportOptions, quality: DatasetQuality) -> str:
    """The dataset card (README.md): what the data is, where each label came from, and its quality with the
    interval, the number of reviews and the method, so the statement travels with the files."""
    examples = [e for split in SPLITS for e in splits[split]]
    origins = _origins(examples)
    share = quality.share_at_least
    lines = [
        f"# Fine-tuning dataset ({options.kind})",
        "",
        f"{len(examples):,} examples ({', '.join(f'{split} {len(splits[split]):,}' for split in SPLITS)}), "
        f"in {', '.join(options.formats)}. Labels: {origins['human']:,} written or accepted by reviewers, "
        f"{origins['llm']:,} by the LLM annotator and rated at least {options.threshold_name} by the judge or a "
        "reviewer. `provenance.jsonl` traces every example to its task, source id, prompt version and round; "
        "`manifest.json` lists every file with its sha256.",
        "",
        "## Quality",
        "",
        quality.statement() + ".",
        "",
    ]
    if share is not None and quality.unreviewed_share_at_least is not None:
        part = quality.unreviewed_share_at_least
        lines += [
            f"- Unreviewed LLM labels: {part.estimate:.1%} (95% CI {part.low:.1%}-{part.high:.1%}) at "
            f"{quality.threshold_name} or better by a reviewer's standard; the judge approved every one of them.",
            f"- Method: {quality.method}; {quality.n_reviews:,} reviews"
            + (f" in {', '.join(quality.rounds)}." if quality.rounds else "."),
            f"- Assumption: {quality.assumption}.",
        ]
    lines += [f"- Note: {warning}." for warning in quality.warnings]
    lines += [
        "",
        "A 95% interval means: estimated this way, the true share lies inside it for 95 of 100 datasets. It rests "
        "on reviews drawn at random with recorded probabilities, not on the judge being right.",
        "",
    ]
    return "\n".join(lines)


def _provenance_rows(splits: dict[str, list[TrainingExample]]) -> Iterable[dict[str, Any]]:
    for split in SPLITS:
        for index, example in enumerate(splits[split]):
            yield {
                "example_id": example_id(split, index),
                "split": split,
                "task_id": example.task_id,
                "source_id": example.source_id,
                "origin": example.origin,
                "llm_level": example.llm_level,
                "human_level": example.human_level,
                "rating_anchored": example.rating_anchored,
                "model_version": example.model_version,
                "round": example.round,
            }


def _file_entry(path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    if path.suffix == ".parquet":
        entry["rows"] = _parquet_rows(path)
    else:
        entry["lines"] = line_count(path)
    return entry


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq  # heavy import, only for Parquet

    return int(pq.ParquetFile(path).metadata.num_rows)


def _swap_into_place(staging: Path, target: Path) -> None:
    # Two renames: the old export stays whole until the new one is complete, and comes back on failure.
    backup: Path | None = None
    if target.exists():
        backup = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.old"
        os.rename(target, backup)
    try:
        os.rename(staging, target)
    except BaseException:
        if backup is not None:
            os.rename(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
