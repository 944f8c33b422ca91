"""Drawing review rounds from a pool: stable source ids, fresh samples, task data for each config."""

from __future__ import annotations

import csv
import json

import pytest

from prelabel.dialogue import InputError
from prelabel.label_interface import parse_label_config
from prelabel.labeling.items import source_id
from prelabel.push import PoolItem, next_round_name, plan_round, read_pool, task_data
from tests.conftest import SENTIMENT_CONFIG, SUMMARY_CONFIG

SUMMARY = parse_label_config(SUMMARY_CONFIG)
SENTIMENT = parse_label_config(SENTIMENT_CONFIG)


def test_source_id_prefers_the_records_own_id_else_hashes_the_input():
    assert source_id({"fname": "dev_7", "dialogue": "x"}, "dialogue") == "dev_7"
    assert source_id({"id": 12, "text": "x"}, "text") == "12"
    hashed = source_id({"text": "Great phone."}, "text")
    assert hashed.startswith("sha1:") and hashed == source_id({"text": "Great phone.", "label": "x"}, "text")
    assert hashed != source_id({"text": "Bad phone."}, "text")


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_pools_read_from_jsonl_json_and_csv_alike(tmp_path, suffix):
    rows = [{"text": f"sentence {i}", "label": "positive"} for i in range(5)] + [{"text": "sentence 0", "label": "x"}]
    path = tmp_path / f"pool.{suffix}"
    if suffix == "jsonl":
        path.write_text("\n".join(json.dumps(row) for row in rows))
    elif suffix == "json":
        path.write_text(json.dumps(rows))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    pool = read_pool(path, "text")
    assert [item.record["text"] for item in pool] == [f"sentence {i}" for i in range(5)]  # duplicate input once


def test_rounds_draw_fresh_items_reproducibly():
    pool = [PoolItem(source_id=f"s{i}", record={"text": str(i)}) for i in range(50)]
    first = plan_round(pool, set(), 15, seed=1, round_name="round-1")
    again = plan_round(pool, set(), 15, seed=1, round_name="round-1")
    assert [i.source_id for i in first.items] == [i.source_id for i in again.items]
    assert [i.source_id for i in first.items] != [f"s{i}" for i in range(15)]
    second = plan_round(pool, {i.source_id for i in first.items}, 15, seed=1, round_name="round-2")
    assert not {i.source_id for i in first.items} & {i.source_id for i in second.items}
    assert second.already_pushed == 15
    rest = plan_round(pool, {f"s{i}" for i in range(45)}, 15, seed=1, round_name="round-4")
    assert len(rest.items) == 5  # only five never pushed
    assert next_round_name({"round-1", "round-2"}) == "round-3"


def test_task_data_turns_dialogue_lines_into_paragraphs():
    item = PoolItem(
        source_id="dev_1",
        record={"dialogue": "#Person1#: Hi.\n#Person2#: Hello!", "topic": "greeting", "summary": "secret reference"},
    )
    data = task_data(item, SUMMARY, "round-1", None, keep_fields=("topic",))
    assert data["dialogue"] == [{"author": "Person1", "text": "Hi."}, {"author": "Person2", "text": "Hello!"}]
    assert data["source_id"] == "dev_1" and data["prelabel_round"] == "round-1" and data["topic"] == "greeting"
    assert "summary" not in data  # a reference label never reaches the reviewer unasked


def test_task_data_for_classification_and_bad_records_name_source_and_field():
    item = PoolItem(source_id="sha1:abc", record={"text": "Works great.", "label": "positive"})
    assert task_data(item, SENTIMENT, "round-1", None)["text"] == "Works great."
    with pytest.raises(InputError, match="source sha1:abc field 'text'"):
        task_data(PoolItem(source_id="sha1:abc", record={"text": ""}), SENTIMENT, "round-1", None)
    with pytest.raises(InputError, match="source dev_9 field 'dialogue'"):
        task_data(PoolItem(source_id="dev_9", record={"dialogue": 5}), SUMMARY, "round-1", None)
