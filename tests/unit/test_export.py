"""The fine-tuning export: selection rules, duplicates, the seeded split, every format's shape, the
manifest's checksums, and the atomic replace of an existing export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from rich.console import Console

from prelabel.export import ExportError
from prelabel.export.formats import WRITERS
from prelabel.export.layout import PROVENANCE_KEYS
from prelabel.export.options import ExportOptions
from prelabel.export.selection import select_examples, split_examples, validation_size
from prelabel.export.validation import bedrock_problems, validate_export
from prelabel.export.writer import export_dataset
from prelabel.records import ReviewedTask
from prelabel.scripts.tables import export_table

SUMMARY_INSTRUCTION = "Summarize the conversation between two users in one paragraph, keeping every important point."
JSONL_FORMATS = ("openai", "bedrock", "alpaca", "sharegpt")


def task(task_id: int, **fields: Any) -> ReviewedTask:
    fields.setdefault("input_text", f"A: message number {task_id}\nB: reply number {task_id}")
    return ReviewedTask(task_id=task_id, source_id=f"src-{task_id}", **fields)


def reviewed(task_id: int, label: str, **fields: Any) -> ReviewedTask:
    return task(task_id, human_label=label, annotation_id=1000 + task_id, **fields)


def pool(n: int = 40) -> list[ReviewedTask]:
    """A mixed pool: reviewer labels, accepted and rejected LLM labels, unrated and unlabeled tasks."""
    tasks = []
    for i in range(1, n + 1):
        if i % 5 == 0:
            tasks.append(reviewed(i, f"Human summary {i}.", llm_label=f"LLM summary {i}.", llm_level=1, human_level=4))
        elif i % 5 == 1:
            tasks.append(task(i, llm_label=f"LLM summary {i}.", llm_level=1, model_version="m-v1", round="r1"))
        elif i % 7 == 0:
            tasks.append(task(i, llm_label=f"LLM summary {i}.", round="r1"))
        else:
            tasks.append(task(i, llm_label=f"LLM summary {i}.", llm_level=3 + i % 2, model_version="m-v1", round="r1"))
    return tasks


def options(out: Path, **fields: Any) -> ExportOptions:
    return ExportOptions(out_dir=out, **fields)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


# -- selection -------------------------------------------------------------------------------------


def test_each_task_lands_in_exactly_one_bucket():
    tasks = [
        reviewed(1, "Reviewer wrote this.", llm_label="LLM wrote that.", llm_level=0),
        task(2, llm_label="Good LLM label.", llm_level=3),
        task(3, llm_label="Excellent LLM label.", llm_level=4),
        task(4, llm_label="Moderate LLM label.", llm_level=2),
        task(5, llm_label="Unrated LLM label."),
        task(6),
        task(7, llm_label="   ", llm_level=4),
        task(8, human_label="  ", annotation_id=9, llm_label="Falls back to the LLM.", llm_level=4),
        task(9, input_text="  ", llm_label="Label for nothing.", llm_level=4),
    ]
    examples, counts = select_examples(tasks)
    assert counts.model_dump() == {
        "human": 1,
        "llm_accepted": 3,
        "dropped_low_rating": 1,
        "dropped_unedited_low_rating": 0,
        "dropped_unrated": 1,
        "dropped_no_label": 2,
        "dropped_no_input": 1,
        "dropped_duplicate": 0,
    }
    assert counts.total == len(tasks) and counts.exported == len(examples) == 4
    assert [(e.task_id, e.origin, e.output) for e in examples] == [
        (1, "human", "Reviewer wrote this."),
        (2, "llm", "Good LLM label."),
        (3, "llm", "Excellent LLM label."),
        (8, "llm", "Falls back to the LLM."),
    ]


def test_threshold_by_name_or_number_changes_the_cut():
    tasks = [task(i, llm_label=f"label {i}", llm_level=i) for i in range(5)]
    for threshold, kept in [(0, 5), (2, 3), (3, 2), (4, 1)]:
        examples, counts = select_examples(tasks, threshold)
        assert len(examples) == kept and counts.dropped_low_rating == 5 - kept
    assert ExportOptions(out_dir=Path("x"), threshold="moderate").threshold == 2
    assert ExportOptions(out_dir=Path("x"), threshold=" Excellent ").threshold == 4
    assert ExportOptions(out_dir=Path("x"), threshold="1").threshold == 1
    assert ExportOptions(out_dir=Path("x")).threshold == 3
    for bad in ("great", 5, -1, True):
        with pytest.raises(ValidationError):
            ExportOptions(out_dir=Path("x"), threshold=bad)


def test_a_reviewer_rating_outranks_the_judge_for_an_llm_label():
    # The reviewer rated the LLM label "bad" and wrote nothing: the judge's "excellent" must not win.
    rejected = task(1, llm_label="LLM label.", llm_level=4, human_level=1, annotation_id=11)
    approved = task(2, llm_label="Other LLM label.", llm_level=0, human_level=4, annotation_id=12)
    examples, counts = select_examples([rejected, approved])
    assert [e.task_id for e in examples] == [2]
    assert counts.dropped_low_rating == 1 and counts.llm_accepted == 1


def test_an_unedited_review_rated_below_the_threshold_is_not_human_gold():
    # Submitting the LLM's label untouched while rating it "poor" is a verdict on the LLM, not a gold label.
    poor = reviewed(1, "LLM label.", llm_label="LLM label.", llm_level=4, human_level=1)
    fine = reviewed(2, "Other LLM label. ", llm_label="Other LLM label.", llm_level=0, human_level=3)
    unrated = reviewed(3, "Third LLM label.", llm_label="Third LLM label.", llm_level=0)
    examples, counts = select_examples([poor, fine, unrated])
    assert [(e.task_id, e.origin) for e in examples] == [(2, "human"), (3, "human")]
    assert counts.dropped_unedited_low_rating == 1 and counts.dropped == 1 and counts.total == 3
    assert counts.dropped_low_rating == 0 and counts.human == 2
    # The same threshold as everywhere else decides.
    examples, counts = select_examples([poor, fine, unrated], threshold=1)
    assert [e.task_id for e in examples] == [1, 2, 3] and counts.dropped_unedited_low_rating == 0


def test_export_reads_each_review_as_pull_does():
    from prelabel.records import review_contribution
    from prelabel.review_stats import version_stats

    tasks = [
        reviewed(1, "Reviewer wrote this.", llm_label="LLM wrote that.", llm_level=0),
        reviewed(2, "Same label.", llm_label="Same label.", llm_level=0, human_level=4),
        task(3, llm_label="Rated only.", llm_level=4, human_level=1, annotation_id=13),
        reviewed(4, "", llm_label="Empty review, judge says good.", llm_level=3),
        reviewed(5, "   ", llm_label="Blank review, judge says poor.", llm_level=1),
        task(6, llm_label="Never reviewed.", llm_level=4),
    ]
    kinds = [review_contribution(t) for t in tasks]
    assert kinds == ["edited", "unchanged", "rating_only", "empty", "empty", "unreviewed"]
    stats = version_stats(None, tasks)
    assert (stats.n_reviewed, stats.edited, stats.accepted_unchanged, stats.rating_only, stats.empty) == (5, 1, 1, 1, 2)
    assert stats.n_label_pairs == 2  # only the reviews that hold a label compare texts
    examples, counts = select_examples(tasks)
    # Human gold exactly where pull saw a reviewer's label; the reviewer's rating decides a rating-only
    # review; an empty review leaves the task to the judge, as if it had not been reviewed.
    assert {e.task_id: e.origin for e in examples} == {1: "human", 2: "human", 4: "llm", 6: "llm"}
    assert counts.dropped_low_rating == 2 and counts.total == 6


def test_duplicates_keep_the_lowest_task_id_and_ignore_whitespace():
    tasks = [
        task(7, input_text="A: hi\nB:   hello", llm_label="Greeting.", llm_level=4),
        reviewed(3, "Greeting.", input_text="A: hi\nB: hello"),
        task(5, input_text=" A: hi  B: hello ", llm_label="Greeting.", llm_level=3),
        task(9, input_text="A: hi\nB: hello", llm_label="A different label.", llm_level=3),
        task(11, input_text="a: HI\nb: hello", llm_label="Greeting.", llm_level=3),
    ]
    examples, counts = select_examples(tasks)
    assert [(e.task_id, e.origin) for e in examples] == [(3, "human"), (9, "llm"), (11, "llm")]
    assert counts.dropped_duplicate == 2 and counts.total == 5


def test_classification_default_instruction_names_the_labels():
    opts = ExportOptions(out_dir=Path("x"), kind="classification", labels=["positive", "negative", "neutral"])
    assert opts.instruction == "Classify the sentiment of the text as one of: positive, negative, neutral."
    assert ExportOptions(out_dir=Path("x")).instruction == SUMMARY_INSTRUCTION
    assert ExportOptions(out_dir=Path("x"), instruction=" Custom. ").instruction == "Custom."
    with pytest.raises(ValidationError):
        ExportOptions(out_dir=Path("x"), kind="classification")
    with pytest.raises(ValidationError):
        ExportOptions(out_dir=Path("x"), formats=[])
    with pytest.raises(ValidationError):
        ExportOptions(out_dir=Path("x"), formats=["csv"])
    with pytest.raises(ValidationError):
        ExportOptions(out_dir=Path("x"), validation_fraction=1.0)


# -- split -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, fraction, expected",
    [(0, 0.1, 0), (1, 0.5, 0), (2, 0.1, 1), (10, 0.1, 1), (15, 0.1, 2), (40, 0.1, 4), (40, 0.0, 0), (3, 0.9, 2)],
)
def test_validation_size(n, fraction, expected):
    assert validation_size(n, fraction) == expected


def test_split_is_seeded_and_ignores_input_order():
    examples, _ = select_examples(pool(60))
    first = split_examples(examples, 0.2, seed=7)
    again = split_examples(list(reversed(examples)), 0.2, seed=7)
    other = split_examples(examples, 0.2, seed=8)

    def ids(split: dict[str, list[Any]]) -> dict[str, list[int]]:
        return {name: [e.task_id for e in rows] for name, rows in split.items()}

    assert ids(first) == ids(again)
    assert ids(first) != ids(other)
    assert len(first["validation"]) == validation_size(len(examples), 0.2)
    assert sorted(ids(first)["train"] + ids(first)["validation"]) == sorted(e.task_id for e in examples)


# -- files -----------------------------------------------------------------------------------------


def test_export_writes_every_format_and_validates(tmp_path):
    out = tmp_path / "dataset"
    report = export_dataset(pool(), options(out))
    assert validate_export(out) == []

    examples, counts = select_examples(pool())
    assert report.counts == counts
    assert report.splits == {"train": len(examples) - 3, "validation": 3}
    assert sum(report.origins.values()) == len(examples) and report.origins["human"] == 8
    expected_files = {f"{name}/{split}.jsonl" for name in JSONL_FORMATS for split in ("train", "validation")}
    expected_files |= {"parquet/train.parquet", "parquet/validation.parquet", "provenance.jsonl", "README.md"}
    assert set(report.files) == expected_files
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == expected_files | {"manifest.json"}

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["human"] == 8 and manifest["counts"]["total"] == 40
    assert manifest["splits"] == report.splits and manifest["origins"] == report.origins
    assert manifest["options"]["threshold_name"] == "good" and "out_dir" not in manifest["options"]
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == digest(out / name)
    assert manifest["files"]["openai/train.jsonl"]["lines"] == report.splits["train"]
    assert manifest["files"]["parquet/validation.parquet"]["rows"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_each_format_has_the_documented_shape(tmp_path):
    out = tmp_path / "dataset"
    export_dataset(pool(), options(out, validation_fraction=0.25))
    provenance = read_jsonl(out / "provenance.jsonl")
    train_prov = [p for p in provenance if p["split"] == "train"]
    by_task = {t.task_id: t for t in pool()}

    openai_rows = read_jsonl(out / "openai" / "train.jsonl")
    bedrock_rows = read_jsonl(out / "bedrock" / "train.jsonl")
    alpaca_rows = read_jsonl(out / "alpaca" / "train.jsonl")
    sharegpt_rows = read_jsonl(out / "sharegpt" / "train.jsonl")
    parquet_rows = pq.read_table(out / "parquet" / "train.parquet").to_pylist()
    assert len(openai_rows) == len(bedrock_rows) == len(alpaca_rows) == len(sharegpt_rows) == len(train_prov)

    for i, prov in enumerate(train_prov):
        source = by_task[prov["task_id"]]
        label = source.human_label if prov["origin"] == "human" else source.llm_label
        assert openai_rows[i] == {
            "messages": [
                {"role": "system", "content": SUMMARY_INSTRUCTION},
                {"role": "user", "content": source.input_text},
                {"role": "assistant", "content": label},
            ]
        }
        assert bedrock_rows[i] == {
            "system": SUMMARY_INSTRUCTION,
            "messages": [{"role": "user", "content": source.input_text}, {"role": "assistant", "content": label}],
        }
        assert alpaca_rows[i] == {"instruction": SUMMARY_INSTRUCTION, "input": source.input_text, "output": label}
        assert sharegpt_rows[i] == {
            "conversations": [
                {"from": "system", "value": SUMMARY_INSTRUCTION},
                {"from": "human", "value": source.input_text},
                {"from": "gpt", "value": label},
            ]
        }
        assert parquet_rows[i] == alpaca_rows[i]


def test_provenance_is_complete_and_never_in_the_training_text(tmp_path):
    out = tmp_path / "dataset"
    report = export_dataset(pool(), options(out))
    provenance = read_jsonl(out / "provenance.jsonl")
    assert [p["example_id"] for p in provenance] == [f"train-{i:06d}" for i in range(report.splits["train"])] + [
        f"validation-{i:06d}" for i in range(3)
    ]
    assert set(provenance[0]) == set(PROVENANCE_KEYS)
    human = next(p for p in provenance if p["origin"] == "human")
    assert human["human_level"] == 4 and human["llm_level"] == 1
    llm = next(p for p in provenance if p["origin"] == "llm")
    assert llm["model_version"] == "m-v1" and llm["round"] == "r1" and llm["llm_level"] >= 3

    training_text = "".join(
        (out / name / f"{split}.jsonl").read_text() for name in JSONL_FORMATS for split in ("train", "validation")
    )
    for marker in ("src-", "m-v1", "task_id", "origin", "llm_level", "model_version", "round", "prelabel"):
        assert marker not in training_text
    table = pq.read_table(out / "parquet" / "train.parquet")
    assert table.column_names == ["instruction", "input", "output"]
    assert not any("src-" in value for column in table.columns for value in column.to_pylist())


def test_parquet_is_readable_as_a_string_table(tmp_path):
    out = tmp_path / "dataset"
    report = export_dataset(pool(), options(out, formats=["parquet"]))
    train = pq.read_table(out / "parquet" / "train.parquet")
    validation = pq.read_table(out / "parquet" / "validation.parquet")
    assert train.num_rows == report.splits["train"] and validation.num_rows == report.splits["validation"]
    assert [str(field.type) for field in train.schema] == ["string", "string", "string"]
    assert set(report.files) == {"parquet/train.parquet", "parquet/validation.parquet", "provenance.jsonl", "README.md"}


def test_unicode_survives_and_line_separators_do_not_split_lines(tmp_path):
    out = tmp_path / "dataset"
    tasks = [
        reviewed(1, "Résumé: ils se retrouvent à 17 h \u2028 près du café.", input_text="A: Où?\u2028\nB: Café ☕"),
        task(2, llm_label="要約。", llm_level=4, input_text="A: こんにちは\nB: やあ"),
    ]
    export_dataset(tasks, options(out, validation_fraction=0.0))
    assert validate_export(out) == []
    rows = read_jsonl(out / "alpaca" / "train.jsonl")
    assert {r["output"] for r in rows} == {t.human_label or t.llm_label for t in tasks}
    text = (out / "alpaca" / "train.jsonl").read_text(encoding="utf-8")
    assert "要約" in text and "\\u2028" in text and "\u2028" not in text


def test_no_validation_files_without_a_validation_split(tmp_path):
    out = tmp_path / "dataset"
    report = export_dataset(pool(), options(out, validation_fraction=0.0, formats=["openai", "parquet"]))
    assert report.splits["validation"] == 0
    assert not (out / "openai" / "validation.jsonl").exists()
    assert not (out / "parquet" / "validation.parquet").exists()
    assert validate_export(out) == []


def test_two_runs_are_byte_identical_and_the_seed_matters(tmp_path):
    first = export_dataset(pool(), options(tmp_path / "a", seed=3))
    second = export_dataset(list(reversed(pool())), options(tmp_path / "b", seed=3))
    third = export_dataset(pool(), options(tmp_path / "c", seed=4))
    assert tree_digests(first.out_dir) == tree_digests(second.out_dir)
    differing = {name for name, sha in tree_digests(first.out_dir).items() if tree_digests(third.out_dir)[name] != sha}
    assert "openai/train.jsonl" in differing and "parquet/train.parquet" in differing


def test_nothing_to_export_is_an_error_and_keeps_the_old_export(tmp_path):
    out = tmp_path / "dataset"
    export_dataset(pool(), options(out))
    before = tree_digests(out)
    with pytest.raises(ExportError, match="no task qualifies"):
        export_dataset([task(1, llm_label="weak", llm_level=0)], options(out))
    assert tree_digests(out) == before


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, problem",
    [
        (
            {"system": "s", "messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]},
            "first message must be from the user",
        ),
        ({"messages": [{"role": "user", "content": "u"}, {"role": "user", "content": "v"}]}, "roles must alternate"),
        (
            {
                "messages": [
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "u2"},
                ]
            },
            "last message must be from the assistant",
        ),
        ({"messages": [{"role": "user", "content": "u"}]}, "at least two messages"),
        (
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]},
            "content must be a non-empty string",
        ),
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
            "role must be 'user' or 'assistant'",
        ),
        (
            {
                "system": "s",
                "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
                "task_id": 3,
            },
            "unexpected keys ['task_id']",
        ),
        (
            {"system": 5, "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
            "system must be a string",
        ),
    ],
)
def test_bedrock_rules(row, problem):
    assert any(problem in p for p in bedrock_problems(row)), bedrock_problems(row)


def test_bedrock_rule_accepts_a_good_row_without_system():
    row = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    assert bedrock_problems(row) == []


def rewrite_jsonl(path: Path, change) -> None:
    rows = read_jsonl(path)
    change(rows)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_a_hand_broken_bedrock_file_is_caught(tmp_path):
    out = tmp_path / "dataset"
    export_dataset(pool(), options(out))
    path = out / "bedrock" / "train.jsonl"

    def swap_roles(rows):
        rows[0]["messages"].reverse()
        rows[1]["messages"][1]["content"] = ""
        rows[2]["messages"].append({"role": "assistant", "content": "again"})

    rewrite_jsonl(path, swap_roles)
    problems = validate_export(out)
    assert any("bedrock/train.jsonl: sha256 does not match" in p for p in problems)
    assert any(p.startswith("bedrock/train.jsonl:1: first message must be from the user") for p in problems)
    assert any(p.startswith("bedrock/train.jsonl:1: last message must be from the assistant") for p in problems)
    assert any(p.startswith("bedrock/train.jsonl:2: message 1: content must be a non-empty string") for p in problems)
    assert any(p.startswith("bedrock/train.jsonl:3: message 2: roles must alternate") for p in problems)


@pytest.mark.parametrize(
    "name, change, problem",
    [
        ("openai", lambda rows: rows[0]["messages"].pop(0), "roles ['user', 'assistant'] should be"),
        ("openai", lambda rows: rows[0]["messages"][2].update(role="user"), "['system', 'user', 'assistant']"),
        ("alpaca", lambda rows: rows[0].pop("input"), "missing keys ['input']"),
        ("alpaca", lambda rows: rows[0].update(origin="llm"), "unexpected keys ['origin']"),
        (
            "sharegpt",
            lambda rows: rows[0]["conversations"][2].update({"from": "assistant"}),
            "should be ['system', 'human', 'gpt']",
        ),
        ("sharegpt", lambda rows: rows.pop(), "examples, manifest says"),
    ],
)
def test_hand_broken_format_files_are_caught(tmp_path, name, change, problem):
    out = tmp_path / "dataset"
    export_dataset(pool(), options(out))
    rewrite_jsonl(out / name / "train.jsonl", change)
    problems = validate_export(out)
    assert any(problem in p for p in problems), problems


def test_broken_parquet_manifest_and_stray_files_are_caught(tmp_path):
    import pyarrow as pa

    out = tmp_path / "dataset"
    export_dataset(pool(), options(out))
    table = pq.read_table(out / "parquet" / "train.parquet")
    pq.write_table(table.append_column("task_id", pa.array(range(table.num_rows))), out / "parquet" / "train.parquet")
    (out / "notes.txt").write_text("hello")
    (out / "alpaca" / "validation.jsonl").unlink()
    problems = validate_export(out)
    assert any("parquet/train.parquet: columns" in p for p in problems), problems
    assert any(p == "notes.txt: not listed in manifest.json" for p in problems)
    assert any(p.startswith("alpaca/validation.jsonl: listed in manifest.json but missing") for p in problems)
    assert any(p.startswith("alpaca/validation.jsonl: missing") for p in problems)

    (out / "manifest.json").write_text("{not json")
    assert validate_export(out)[0].startswith("manifest.json: unreadable")
    assert validate_export(tmp_path / "nowhere") == ["manifest.json: missing"]


def test_broken_provenance_is_caught(tmp_path):
    out = tmp_path / "dataset"
    export_dataset(pool(), options(out))
    rewrite_jsonl(out / "provenance.jsonl", lambda rows: rows.reverse())
    assert any("provenance.jsonl:1: expected train-000000" in p for p in validate_export(out))


# -- atomic replace --------------------------------------------------------------------------------


def test_a_failing_format_leaves_the_old_export_intact(tmp_path, monkeypatch):
    out = tmp_path / "dataset"
    export_dataset(pool(), options(out))
    before = tree_digests(out)

    def explode(*args: Any) -> Path:
        raise RuntimeError("disk full")

    monkeypatch.setitem(WRITERS, "parquet", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        export_dataset(pool(60), options(out, seed=99))
    assert tree_digests(out) == before
    assert validate_export(out) == []
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]  # staging removed


def test_a_failure_before_anything_exists_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(WRITERS, "sharegpt", lambda *args: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        export_dataset(pool(), options(tmp_path / "dataset"))
    assert list(tmp_path.iterdir()) == []


def test_a_successful_export_replaces_the_old_one(tmp_path):
    out = tmp_path / "dataset"
    export_dataset(pool(), options(out, formats=["openai", "alpaca"]))
    report = export_dataset(pool(60), options(out, formats=["bedrock"]))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "bedrock", "manifest.json", "provenance.jsonl"]
    assert report.counts.total == 60 and validate_export(out) == []
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]


def test_an_unrelated_directory_is_never_replaced(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "important.txt").write_text("keep me")
    with pytest.raises(ExportError, match="refusing to replace"):
        export_dataset(pool(), options(out))
    assert (out / "important.txt").read_text() == "keep me"
    export_dataset(pool(), options(tmp_path / "empty"))  # a missing or empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_dataset(pool(), options(tmp_path / "file"))


# -- display ---------------------------------------------------------------------------------------


def test_render_report_shows_every_count(tmp_path):
    report = export_dataset(pool(), options(tmp_path / "dataset"))
    console = Console(record=True, width=120)
    console.print(export_table(report))
    text = console.export_text()
    for label, value in [
        ("reviewer's label", report.counts.human),
        ("dropped: duplicate", report.counts.dropped_duplicate),
        ("dropped: unedited, reviewer rated below threshold", report.counts.dropped_unedited_low_rating),
        ("dropped: LLM label not rated", report.counts.dropped_unrated),
        ("validation", report.splits["validation"]),
        ("total tasks", 40),
    ]:
        assert any(label in line and line.rstrip(" │").endswith(str(value)) for line in text.splitlines()), text
