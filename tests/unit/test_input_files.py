"""Input files as people have them: a byte-order mark, a line that is not UTF-8, a huge CSV field, ids of
odd types and repeated ids. A bad record fails that item, named by file and line; the rest is read."""

from __future__ import annotations

import json
from pathlib import Path

from prelabel.labeling.items import count_records, iter_items
from prelabel.tasks_io import read_tasks

BOM = b"\xef\xbb\xbf"
CSV_LIMIT = 131072  # the csv module's default field limit


def items(path: Path) -> list[tuple[str, str | None]]:
    return [(item.source_id, item.error) for item in iter_items(path, "dialogue")]


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def test_a_bom_csv_keeps_its_ids(tmp_path):
    pool = tmp_path / "pool.csv"
    pool.write_bytes(BOM + b"id,dialogue\r\na-1,#Person1#: Hi.\r\na-2,#Person1#: Bye.\r\n")
    assert items(pool) == [("a-1", None), ("a-2", None)]
    assert [task["data"]["id"] for task in read_tasks(pool)] == ["a-1", "a-2"]


def test_a_bom_jsonl_and_json_are_read(tmp_path):
    records = [{"id": "a-1", "dialogue": "x"}, {"id": "a-2", "dialogue": "y"}]
    (tmp_path / "pool.jsonl").write_bytes(BOM + jsonl(*records))
    (tmp_path / "pool.json").write_bytes(BOM + json.dumps(records).encode())
    for name in ("pool.jsonl", "pool.json"):
        assert items(tmp_path / name) == [("a-1", None), ("a-2", None)]


def test_a_line_that_is_not_utf8_fails_only_that_item(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(jsonl({"id": "a", "dialogue": "x"}) + b'{"id": "b", "dialogue": "caf\xe9"}\n' + jsonl({"id": "c"}))
    got = items(pool)
    assert [sid for sid, _ in got] == ["a", "line:2", "c"]
    error = got[1][1]
    assert error and str(pool) in error and "line 2" in error and "UTF-8" in error
    assert count_records(pool) == 3


def test_a_csv_row_that_is_not_utf8_fails_only_that_item(tmp_path):
    pool = tmp_path / "pool.csv"
    pool.write_bytes(b"id,dialogue\na,x\nb,caf\xe9\nc,z\n")
    got = items(pool)
    assert [sid for sid, _ in got] == ["a", "line:3", "c"]
    assert got[1][1] and str(pool) in got[1][1] and "line 3" in got[1][1] and "UTF-8" in got[1][1]
    assert count_records(pool) == 3


def test_a_csv_field_over_the_limit_fails_only_that_item(tmp_path):
    pool = tmp_path / "pool.csv"
    huge = "y" * (CSV_LIMIT + 1)
    pool.write_text(f'id,dialogue\na,x\nb,"{huge}\nstill b"\nc,z\n', encoding="utf-8")
    got = items(pool)
    assert [sid for sid, _ in got] == ["a", "line:3", "c"]
    assert got[1][1] and str(pool) in got[1][1] and "line 3" in got[1][1] and str(CSV_LIMIT) in got[1][1]
    assert count_records(pool) == 3
    # A field at the limit is fine.
    pool.write_text(f"id,dialogue\na,{'y' * CSV_LIMIT}\n", encoding="utf-8")
    assert items(pool) == [("a", None)]


def test_ids_that_are_neither_strings_nor_integers_are_refused_per_item(tmp_path):
    pool = tmp_path / "pool.jsonl"
    bad = [{"id": True}, {"id": 1.5}, {"id": {"n": 1}}, {"uid": [1]}]
    pool.write_bytes(jsonl({"id": 7, "dialogue": "x"}, *bad, {"id": "s", "dialogue": "y"}))
    got = items(pool)
    assert [sid for sid, _ in got] == ["7", "line:2", "line:3", "line:4", "line:5", "s"]
    for (_, error), field in zip(got[1:5], ["id", "id", "id", "uid"], strict=True):
        assert error and str(pool) in error and field in error and "string or an integer" in error
    assert "line 2" in got[1][1] and "line 5" in got[4][1]


def test_integer_and_string_ids_do_not_silently_merge(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(jsonl({"id": 1, "dialogue": "x"}, {"id": "1", "dialogue": "x"}))
    got = items(pool)
    assert got[0] == ("1", None) and got[1][0] == "line:2"
    assert "line 2" in got[1][1] and "line 1" in got[1][1] and "different content" in got[1][1]


def test_a_repeated_id_with_other_content_is_an_error_and_an_identical_one_a_duplicate(tmp_path):
    pool = tmp_path / "pool.csv"
    pool.write_text("id,dialogue\na,x\nb,y\na,x\na,changed\n", encoding="utf-8")
    got = items(pool)
    assert [sid for sid, _ in got] == ["a", "b", "a", "line:5"]
    assert got[2][1] is None  # the same record twice: one item, labeled once
    assert got[3][1] and str(pool) in got[3][1] and "line 5" in got[3][1] and "line 2" in got[3][1]


def test_csv_rows_with_extra_or_missing_fields_read_as_before(tmp_path):
    pool = tmp_path / "pool.csv"
    pool.write_text("id,dialogue\na,x,extra\nb\na,x,extra\n", encoding="utf-8")
    got = list(iter_items(pool, "dialogue"))
    assert [(item.source_id, item.error) for item in got] == [("a", None), ("b", None), ("a", None)]
    assert got[0].task and got[0].task["data"] == {"id": "a", "dialogue": "x", None: ["extra"]}
    assert got[1].task and got[1].task["data"] == {"id": "b", "dialogue": None}


def test_push_refuses_a_pool_with_odd_or_clashing_ids_naming_file_and_line(tmp_path):
    import pytest

    from prelabel.push import read_pool
    from prelabel.tasks_io import TaskFileError

    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(BOM + jsonl({"id": 1, "text": "x"}, {"id": 1, "text": "x"}, {"id": 2, "text": "y"}))
    assert [item.source_id for item in read_pool(pool, "text")] == ["1", "2"]  # identical: one item
    pool.write_bytes(jsonl({"id": 1, "text": "x"}, {"id": "1", "text": "x"}))
    with pytest.raises(TaskFileError, match=r"line 2: source id '1' is already used by line 1"):
        read_pool(pool, "text")
    pool.write_bytes(jsonl({"id": 1, "text": "x"}, {"id": True, "text": "y"}))
    with pytest.raises(TaskFileError, match=r"pool.jsonl line 2: field 'id' is a boolean"):
        read_pool(pool, "text")


def test_records_without_an_id_stay_one_item_per_input(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(jsonl({"dialogue": "x", "label": "a"}, {"dialogue": "x", "label": "b"}))
    got = items(pool)
    assert got[0] == got[1] and got[0][0].startswith("sha1:") and got[0][1] is None
