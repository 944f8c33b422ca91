"""Routed review rounds through a real Label Studio: `label` rates a pool, `push --strategy uncertain --labels`
draws a round by the judge's uncertainty and pushes the file's labels as predictions, each task recording its
inclusion probability and strategy; reviewers annotate through the API; `pull` writes corrections rows that
carry the round, the probability and the strategy. The next round is calibrated by those reviews, and a
stratified round draws from the items never pushed."""

from __future__ import annotations

import json
import uuid
import zlib

import pytest

from prelabel.label_interface import parse_label_config
from prelabel.push import judge_rating, plan_round, read_labels, read_pool
from prelabel.records import INCLUSION_PROBABILITY_FIELD, ROUND_FIELD, SOURCE_ID_FIELD, STRATEGY_FIELD
from tests.conftest import DIALOGSUM, ROOT, SUMMARY_CONFIG, load_jsonl
from tests.e2e.cli_env import run, use_backend_env

pytestmark = pytest.mark.e2e

CONFIG = parse_label_config(SUMMARY_CONFIG)
CONFIG_PATH = ROOT / "label_config" / "summarization.xml"


def spread_levels(conversation: str, label: str) -> int:
    """Levels 0..4 spread over the conversations, reproducibly."""
    return zlib.crc32(conversation.encode()) % 5


@pytest.fixture(scope="module")
def backend(backend_factory):
    started = backend_factory(PRELABEL_MAX_RETRIES="0")
    started.llm.rate = spread_levels
    return started


def said(result) -> str:
    return " ".join(result.output.split())  # the console folds long lines


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_routed_rounds_record_their_probabilities_through_review_and_pull(
    backend, ls_client, label_studio, tmp_path, monkeypatch
):
    use_backend_env(monkeypatch, backend, label_studio, tmp_path)
    pool = tmp_path / "pool.jsonl"
    records = load_jsonl(DIALOGSUM, limit=30)
    pool.write_text("".join(json.dumps(row) + "\n" for row in records))
    labeled = tmp_path / "labeled.jsonl"
    label = run("label", "-i", pool, "-o", labeled, "-c", CONFIG_PATH, "--no-progress")
    assert label.exit_code == 0, label.output
    labels = read_labels(labeled)
    assert len(labels) == 30 and len({record.level for record in labels.values()}) == 5
    title = f"e2e routed review {uuid.uuid4().hex[:8]}"

    refused = run("push", pool, "--project", title, "--sample", "8", "--strategy", "stratified")
    assert refused.exit_code != 0 and "--labels" in said(refused)
    assert ls_client.find_project(title) is None  # refused before anything reached Label Studio

    calls = backend.provider.count
    pushed = run(
        "push", pool, "--project", title, "-c", CONFIG_PATH, "--sample", "8", "--seed", "3",
        "--strategy", "uncertain", "--labels", labeled,
    )  # fmt: skip
    assert pushed.exit_code == 0, pushed.output
    assert "strategy uncertain (the judge's levels): 8 of 30 candidates, inclusion probabilities" in said(pushed)
    assert "8 predictions are the labels of" in said(pushed)
    assert backend.provider.count == calls  # every prediction came from the labels file: no model was asked

    # What Label Studio holds is what the same draw computes here: the probabilities, the strategy, the labels.
    items = read_pool(pool, "dialogue")
    ratings = {sid: judge_rating(record) for sid, record in labels.items()}
    plan = plan_round(items, set(), 8, 3, "round-1", strategy="uncertain", ratings=ratings)
    expected = {item.source_id: p for item, p in zip(plan.items, plan.probabilities)}
    assert len(set(expected.values())) > 1
    project = ls_client.find_project(title)
    tasks = ls_client.export(project.id)
    assert len(tasks) == 8
    for task in tasks:
        data = task["data"]
        sid = data[SOURCE_ID_FIELD]
        assert data[INCLUSION_PROBABILITY_FIELD] == pytest.approx(expected[sid], rel=1e-12)
        assert data[STRATEGY_FIELD] == "uncertain" and data[ROUND_FIELD] == "round-1"
        [prediction] = task["predictions"]
        assert CONFIG.label_from_result(prediction["result"]) == labels[sid].label
        assert prediction["score"] == pytest.approx(labels[sid].score)

    # Reviewers rate every label blind, in their own control (a lenient judge: they rate one level lower), and
    # edit one.
    for index, task in enumerate(tasks):
        [prediction] = task["predictions"]
        label_text = CONFIG.label_from_result(prediction["result"])
        assert CONFIG.rating is not None and all(
            item["from_name"] != CONFIG.rating.name for item in prediction["result"]
        )
        level = max(0, CONFIG.judge_level_from_result(prediction["result"]) - 1)
        result = CONFIG.review_result(label_text if index else "A reviewer's own summary.", level)
        ls_client.sdk.annotations.create(
            id=task["id"], result=result, parent_prediction=prediction["id"], project=project.id
        )

    corrections = tmp_path / "corrections.jsonl"
    pulled = run("pull", str(project.id), "--corrections", corrections)
    assert pulled.exit_code == 0, pulled.output
    written = rows(corrections)
    assert len(written) == 8
    for row in written:
        assert row["round"] == "round-1" and row["strategy"] == "uncertain"
        assert row["inclusion_probability"] == pytest.approx(expected[row["source_id"]], rel=1e-12)
        assert row["reviewer_level"] == max(0, row["judge_level"] - 1) and row["rating_anchored"] is False
    assert "share rated good or better, round by round" in said(pulled)  # the export's quality, per round

    # The quality of the labeled pool, from the labels file and the corrections, and from the project itself:
    # every review weighted by its recorded probability; the same eight reviews either way.
    from_file = run("quality", "--labels", labeled, "--reviews", corrections, "--json")
    assert from_file.exit_code == 0, from_file.output
    report = json.loads(from_file.stdout)
    assert report["n_items"] == 30 and report["n_reviewed"] == 8 and report["agreement"]["n_pairs"] == 8
    combined = report["share_at_least"]["combined"]
    assert (
        combined["low"] <= combined["estimate"] <= combined["high"] and "1/inclusion-probability" in combined["method"]
    )
    assert report["share_at_least"]["judge_only"] > report["share_at_least"]["reviewed_only"]["estimate"]
    from_project = run("quality", "--project", str(project.id), "--json")
    assert from_project.exit_code == 0, from_project.output
    project_report = json.loads(from_project.stdout)
    assert project_report["n_items"] == 8 and project_report["n_reviewed"] == 8  # the project holds the round only

    # Round two: calibrated by the eight reviews, drawn from the 22 items never pushed.
    second = run(
        "push", pool, "--project", title, "-c", CONFIG_PATH, "--sample", "6", "--seed", "4",
        "--strategy", "uncertain", "--labels", labeled,
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    assert "strategy uncertain (calibrated by 8 earlier reviews): 6 of 22 candidates" in said(second)

    # Round three, stratified by the judge's level over the 16 left.
    third = run(
        "push", pool, "--project", title, "-c", CONFIG_PATH, "--sample", "10", "--seed", "5",
        "--strategy", "stratified", "--labels", labeled,
    )  # fmt: skip
    assert third.exit_code == 0, third.output
    assert "strategy stratified (judge level strata): 10 of 16 candidates" in said(third)
    tasks = ls_client.export(project.id)
    assert len(tasks) == 24 and len({task["data"][SOURCE_ID_FIELD] for task in tasks}) == 24
    by_round: dict[str, list[dict]] = {}
    for task in tasks:
        by_round.setdefault(task["data"][ROUND_FIELD], []).append(task["data"])
    assert {name: len(data) for name, data in by_round.items()} == {"round-1": 8, "round-2": 6, "round-3": 10}
    third_round = by_round["round-3"]
    assert {data[STRATEGY_FIELD] for data in third_round} == {"stratified"}
    # Within a stratum every item has the same probability, n_h / N_h.
    per_level: dict[int | None, set[float]] = {}
    for data in third_round:
        rating = ratings[data[SOURCE_ID_FIELD]]
        per_level.setdefault(rating.level if rating else None, set()).add(data[INCLUSION_PROBABILITY_FIELD])
    assert all(len(values) == 1 for values in per_level.values()) and len(per_level) >= 4
    ls_client.sdk.projects.delete(id=project.id)
