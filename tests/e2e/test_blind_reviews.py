"""A project made with a config of the older shape (one rating control shared by judge and reviewer) keeps
working through a real Label Studio: new predictions leave the shared control empty and carry the judge's level
at the start of its reason; a review that started from a prediction made before blind reviews (the control
pre-filled with the judge's level) is read with that level as the judge's and reported as possibly anchored by
pull, in its table, its JSON and the corrections file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from prelabel.engine import Engine
from prelabel.label_interface import parse_label_config
from prelabel.push import push_round
from prelabel.testing import FakeProvider
from tests.conftest import DIALOGSUM, OLD_SUMMARY_CONFIG, ScriptedLLM, fake_provider_settings
from tests.e2e.cli_env import run

pytestmark = pytest.mark.e2e

CONFIG = parse_label_config(OLD_SUMMARY_CONFIG)


def old_prediction(summary: str) -> list[dict[str, Any]]:
    """A prediction as prelabel wrote it before blind reviews: the shared rating control filled ("bad")."""
    return [
        {"from_name": "summary", "to_name": "dialogue", "type": "textarea", "value": {"text": [summary]}},
        {"from_name": "rating", "to_name": "dialogue", "type": "choices", "value": {"choices": ["bad"]}},
        {
            "from_name": "judge_reason",
            "to_name": "dialogue",
            "type": "textarea",
            "value": {"text": ["misses the point."]},
            "readonly": True,
        },
    ]


def test_an_old_project_keeps_working_and_flags_pre_filled_ratings(
    ls_client: Any, label_studio: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeProvider(ScriptedLLM()) as provider:
        engine = Engine(fake_provider_settings(provider, tmp_path / "model_dir"))
        try:
            title = f"old shape {uuid.uuid4().hex[:8]}"
            pushed = push_round(ls_client, OLD_SUMMARY_CONFIG, title, DIALOGSUM, sample=2, seed=4, engine=engine)
        finally:
            engine.close()
    assert pushed.predicted == 2, pushed
    blind_task, old_task = pushed.task_ids

    # Today's prediction in the old config: the shared control left empty, the level opening the reason.
    [fresh] = ls_client.sdk.tasks.get(blind_task).predictions
    items = {item["from_name"]: item for item in fresh.result}
    assert set(items) == {"summary", "judge_reason"}, fresh.result
    assert items["judge_reason"]["value"]["text"] == ["judge: good. rated good for its coverage."]

    # The other task also holds a prediction made before blind reviews, and its review started from it.
    before = ls_client.sdk.predictions.create(
        task=old_task, result=old_prediction("An old summary."), score=0.25, model_version="before-blind"
    )
    for task_id, parent, level in ((blind_task, fresh.id, 2), (old_task, before.id, 1)):
        ls_client.sdk.annotations.create(
            id=task_id,
            project=pushed.project_id,
            result=CONFIG.review_result("The reviewer's summary.", level),
            parent_prediction=parent,
        )

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    corrections, stats = tmp_path / "corrections.jsonl", tmp_path / "pull.json"
    outcome = run("pull", pushed.project_id, "--corrections", corrections, "--report-json", stats)
    assert outcome.exit_code == 0, outcome.output
    said = " ".join(outcome.output.split())
    assert "warning: 1 of 2 rated pairs are possibly anchored" in said, outcome.output

    report = json.loads(stats.read_text(encoding="utf-8"))
    assert report["anchored_warning"].startswith("1 of 2 rated pairs are possibly anchored")
    assert report["overall"]["n_rating_pairs"] == 2 and report["overall"]["n_anchored_pairs"] == 1
    rows = {row["task_id"]: row for row in map(json.loads, corrections.read_text(encoding="utf-8").splitlines())}
    # The judge's level read from the reason's opening (today) and from the pre-filled control (before).
    assert (rows[blind_task]["judge_rating"], rows[blind_task]["reviewer_level"]) == ("good", 2)
    assert (rows[old_task]["judge_rating"], rows[old_task]["reviewer_level"]) == ("bad", 1)
    assert (rows[blind_task]["rating_anchored"], rows[old_task]["rating_anchored"]) == (False, True)
    assert rows[old_task]["llm_label"] == "An old summary." and rows[old_task]["model_version"] == "before-blind"
    ls_client.sdk.projects.delete(id=pushed.project_id)
