"""Secrets never leave the environment: the whole loop runs with recognisable keys and every file and log line
it produced is scanned for them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prelabel.label_interface import parse_label_config
from prelabel.push import push_round
from prelabel.scripts.cli import app
from tests.conftest import DIALOGSUM, SUMMARY_CONFIG
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-proj-PRELABELSECRETOPENAI0123456789"
ANTHROPIC_KEY = "sk-ant-PRELABELSECRETANTHROPIC0123456789"
BASIC_PASS = "PRELABELSECRETBASICPASS"


def scan(paths: list[Path], texts: list[str], secrets: list[str]) -> list[str]:
    leaks = []
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            data = file.read_bytes()
            leaks += [f"{file}: {secret[:12]}..." for secret in secrets if secret.encode() in data]
    for index, text in enumerate(texts):
        leaks += [f"log text {index}: {secret[:12]}..." for secret in secrets if secret in text]
    return leaks


def test_no_key_or_token_in_any_output(ls_client, label_studio, backend_factory, tmp_path, caplog, monkeypatch):
    # The SDKs' and the backend's DEBUG logs included, whatever level an earlier test left their loggers at.
    for name in (None, "openai", "anthropic", "httpx", "httpx2", "prelabel"):
        caplog.set_level(logging.DEBUG, logger=name)
    backend = backend_factory(
        OPENAI_API_KEY=OPENAI_KEY,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        LOG_LEVEL="DEBUG",
        BASIC_AUTH_USER="labelstudio",
        BASIC_AUTH_PASS=BASIC_PASS,
    )
    pool = DIALOGSUM
    result = push_round(
        ls_client,
        SUMMARY_CONFIG,
        "secrets check",
        pool,
        sample=3,
        seed=2,
        backend_url=backend.url,
        basic_auth=("labelstudio", BASIC_PASS),
    )
    config = parse_label_config(SUMMARY_CONFIG)
    tasks = wait_until(
        lambda: (t := ls_client.export(result.project_id)) and all(x["predictions"] for x in t) and t,
        timeout=120,
        what="predictions",
    )
    for task in tasks:
        ls_client.sdk.annotations.create(
            id=task["id"], project=result.project_id, result=config.review_result("Corrected.", 2)
        )

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", backend.provider.base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", backend.provider.anthropic_base_url)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "cli_model_dir"))
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    runner = CliRunner()
    outputs = [
        runner.invoke(app, ["push", str(pool), "--project", "secrets check", "--sample", "2"]).output,
        runner.invoke(
            app,
            [
                "pull",
                str(result.project_id),
                "--corrections",
                str(tmp_path / "corrections.jsonl"),
                "--report-json",
                str(tmp_path / "pull.json"),
            ],
        ).output,
        runner.invoke(app, ["export", str(result.project_id), "--out", str(tmp_path / "dataset")]).output,
        runner.invoke(app, ["label", "-i", str(pool), "-o", str(tmp_path / "labeled.jsonl"), "--dry-run"]).output,
        runner.invoke(
            app,
            [
                "evaluate",
                str(pool),
                "--size",
                "3",
                "--out",
                str(tmp_path / "evaluation"),
                "--reviews",
                str(tmp_path / "corrections.jsonl"),
            ],
        ).output,
    ]
    small_pool = tmp_path / "small_pool.jsonl"
    small_pool.write_text("".join(pool.read_text(encoding="utf-8").splitlines(keepends=True)[:3]), encoding="utf-8")
    outputs.append(
        runner.invoke(
            app, ["label", "-i", str(small_pool), "-o", str(tmp_path / "labeled.jsonl"), "--no-progress"]
        ).output
    )
    assert (tmp_path / "dataset" / "manifest.json").exists() and (tmp_path / "corrections.jsonl").exists()
    assert (tmp_path / "evaluation" / "report.html").exists() and (tmp_path / "evaluation" / "summary.json").exists()
    assert len((tmp_path / "labeled.jsonl").read_text(encoding="utf-8").splitlines()) == 3

    final_tasks = ls_client.export(result.project_id)
    export_copy = tmp_path / "label_studio_export.json"
    export_copy.write_text(str(final_tasks))
    # The keys reached the fake provider (so they were really used) ...
    assert any(OPENAI_KEY in str(r.headers) for r in backend.provider.requests)
    # ... and nowhere else.
    secrets = [OPENAI_KEY, ANTHROPIC_KEY, BASIC_PASS, label_studio.token]
    leaks = scan(
        [Path(backend.settings.model_dir), tmp_path, export_copy],
        [record.getMessage() for record in caplog.records] + [str(r.args) for r in caplog.records] + outputs,
        secrets,
    )
    # DEBUG reached the provider calls (the transport logs each one)
    assert any(r.levelname == "DEBUG" and r.getMessage().startswith("POST ") for r in caplog.records)
    assert leaks == []
