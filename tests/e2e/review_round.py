"""A review round whose judge rates across every level and leaves some labels unrated: what the Data Manager
tests (end-to-end and browser) push."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from prelabel.engine import Engine
from prelabel.push import PushResult, push_round
from prelabel.testing import FakeProvider, FakeReply, FakeRequest
from tests.conftest import DIALOGSUM, SUMMARY_CONFIG, ScriptedLLM, fake_provider_settings, section


class SpreadJudge(ScriptedLLM):
    """Levels 0..4 spread over the conversations; about one conversation in four gets a rating that is not a
    level, twice, so the judge leaves it unrated."""

    def __init__(self) -> None:
        super().__init__()
        self.rate = lambda conversation, label: zlib.crc32(conversation.encode()) % 5

    def _judge(self, request: FakeRequest, prompt: str) -> FakeReply | dict:
        conversation = section(prompt, "Conversation")
        if zlib.crc32(conversation.encode()) % 4 == 0:
            answer = {"rating": "superb", "reason": "not a level"}
            return answer if request.tool else FakeReply(content=json.dumps(answer))
        return super()._judge(request, prompt)


def push_spread_round(ls_client: Any, model_dir: Path, project: str, sample: int, seed: int) -> PushResult:
    """`push_round` of DialogSum dialogues, labelled and rated here by the spread judge behind fake providers."""
    with FakeProvider(SpreadJudge()) as provider:
        engine = Engine(fake_provider_settings(provider, model_dir, PRELABEL_MAX_RETRIES="0"))
        try:
            return push_round(ls_client, SUMMARY_CONFIG, project, DIALOGSUM, sample=sample, seed=seed, engine=engine)
        finally:
            engine.close()


def prediction_score_and_reason(task: Any) -> tuple[float | None, str]:
    """The score Label Studio stored for the task's one prediction, and the judge's reason."""
    [prediction] = task.predictions
    values = prediction if isinstance(prediction, dict) else prediction.model_dump()
    reason = next(r["value"]["text"][0] for r in values["result"] if r["from_name"] == "judge_reason")
    return values.get("score"), reason
