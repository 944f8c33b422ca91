"""Writes the store fixture in this folder with the prelabel of commit 89fcba9 (the layout before numbered
migrations): see tests/data/README.md for how to run it. Kept so the fixture can be made again."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

from prelabel import store as store_module
from prelabel.prompts import PromptRegistry
from prelabel.providers import CallParams, Completion, Usage
from prelabel.store import Store, cache_key

MODEL_DIR = Path("/tmp/prelabel-fixture-model-dir")  # the prompt version's recorded path lies under it
HERE = Path(__file__).resolve().parent

if not hasattr(store_module, "_SCHEMA"):
    sys.exit("run this with the prelabel of commit 89fcba9, not the current one (see tests/data/README.md)")

shutil.rmtree(MODEL_DIR, ignore_errors=True)
store = Store(MODEL_DIR / "prelabel.sqlite3")
params = CallParams(max_tokens=64).cache_fields()
summary_key = cache_key("openai", "gpt-4o-mini", None, params, "Summarize: #Person1#: Hello.")
rating_key = cache_key("anthropic", "claude-haiku-4-5", None, params, "Rate: Hello.")
summary = Completion(text="Person1 says hello.", usage=Usage(input_tokens=21, output_tokens=5), latency_s=0.4)
rating = Completion(
    text='{"rating": "good", "reason": "faithful"}', usage=Usage(input_tokens=40, output_tokens=9), latency_s=0.3
)
assert store.save_completion(summary_key, "openai", "gpt-4o-mini", summary) is None
assert store.save_completion(rating_key, "anthropic", "claude-haiku-4-5", rating) is None
store.log_call(role="annotator", provider="openai", model="gpt-4o-mini", key=summary_key, completion=summary)
store.log_call(role="judge", provider="anthropic", model="claude-haiku-4-5", key=rating_key, completion=rating)
hit = store.cached_completion(summary_key)
store.log_call(role="annotator", provider="openai", model="gpt-4o-mini", key=summary_key, completion=hit)
store.log_call(
    role="judge", provider="anthropic", model="claude-haiku-4-5", key="0" * 64, completion=None, error="HTTP 529"
)

version = "summarize@0123abcd:gpt-4o-mini+claude-haiku-4-5"
store.record_prediction(
    project="3", task_id=17, model_version=version, label="Person1 says hello.", level=3, score=2.91,
    reason="faithful", error=None,
)  # fmt: skip
store.record_prediction(
    project="3", task_id=18, model_version=version, label=None, level=None, score=None, reason=None,
    error="judge: HTTP 529",
)  # fmt: skip
store.save_project_config("3", '<View><Text name="dialogue" value="$dialogue"/></View>')
store.record_correction(
    annotation_id=101, action="ANNOTATION_CREATED", project="3", task_id=17, parent_prediction=55,
    corrected_label="Person1 greets.", reviewer_level=2, was_cancelled=False,
    payload={"annotation": {"id": 101, "result": []}},
)  # fmt: skip
store.record_correction(
    annotation_id=102, action="ANNOTATION_CREATED", project="3", task_id=18, parent_prediction=None,
    corrected_label="Person2 leaves.", reviewer_level=None, was_cancelled=False, payload={"annotation": {"id": 102}},
)  # fmt: skip
store.delete_correction(102)

registry = PromptRegistry(MODEL_DIR, MODEL_DIR / "prelabel.sqlite3")
registry.save(
    "Summarize the conversation in one sentence.\nConversation:\n{input}",
    "summarization",
    base_name="summarize",
    origin="label studio project 3, task 17",
)

del store, hit  # the last connection closes and checkpoints the WAL into the file
sqlite3.connect(MODEL_DIR / "prelabel.sqlite3").execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
shutil.copy(MODEL_DIR / "prelabel.sqlite3", HERE / "prelabel.sqlite3")
shutil.rmtree(HERE / "prompts", ignore_errors=True)
shutil.copytree(MODEL_DIR / "prompts", HERE / "prompts")
print(f"wrote {HERE / 'prelabel.sqlite3'} and {HERE / 'prompts'}")
