"""Load test of the ML backend: several worker processes, concurrent /predict from several projects, webhooks
in between. Everything runs on 127.0.0.1 and stops by itself (a fixed number of requests and a time limit).

    python -m benchmarks.load [--workers 3] [--projects 4] [--requests 20] [--webhooks 30]

What it checks, beyond speed:
- every /predict answers one prediction per task, each with a result (no task lost under load);
- the cache is consistent: the fake provider gives a different summary on every call, so an item labeled for
  two projects, by any worker, must show the same summary both times, or the cache let two answers through;
- no webhook is lost: every annotation notified is in the store afterwards, and each was answered within Label
  Studio's 1 s webhook timeout. The backend reads each annotation back from Label Studio, here a small fake of
  its annotation and project endpoints (prelabel.testing.label_studio_fake) that answers in 5 ms;
- memory stays bounded: the peak RSS of the master and of each worker.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from pydantic import BaseModel

from benchmarks.label_child import current_rss_mb
from prelabel import label_config
from prelabel.data import dialogsum_dev
from prelabel.harness.backend_process import serve_in_background
from prelabel.harness.labelstudio_server import free_port
from prelabel.judge import LEVELS
from prelabel.label_interface import LabelConfig, parse_label_config
from prelabel.metrics import quantile
from prelabel.testing import FakeProvider, FakeRequest
from prelabel.testing.label_studio_fake import FakeLabelStudio

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "summarization": (label_config.path("summarization"), dialogsum_dev()),
    "classification": (label_config.path("sentiment"), ROOT / "tests" / "data" / "sentiment" / "amazon.jsonl"),
}
WEBHOOK_TIMEOUT_S = 1.0  # Label Studio's


class LoadConfig(BaseModel):
    workers: int = 3
    threads: int = 8
    projects: int = 4  # alternately summarisation and sentiment
    requests_per_project: int = 20
    tasks_per_request: int = 10
    pool_size: int = 60  # items each project draws from: the overlap between projects exercises the shared cache
    webhooks_per_project: int = 30
    latency: float = 0.05
    client_threads: int = 12
    time_limit_s: float = 300.0
    seed: int = 0


class LoadReport(BaseModel):
    workers: int
    projects: int
    predict_requests: int = 0
    tasks: int = 0
    tasks_without_result: int = 0
    wall_s: float = 0.0
    predict_p50_ms: float = 0.0
    predict_p95_ms: float = 0.0
    webhooks_sent: int = 0
    webhooks_answered: int = 0
    webhooks_recorded: int = 0
    webhook_p95_ms: float = 0.0
    webhook_max_ms: float = 0.0
    items_labeled_twice: int = 0  # items asked for by more than one request
    inconsistent_items: int = 0  # of those, items that got two different labels
    provider_calls: int = 0
    peak_rss_total_mb: float = 0.0
    peak_rss_worker_mb: float = 0.0
    errors: list[str] = []
    stopped_by_time_limit: bool = False

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.wall_s if self.wall_s else 0.0


def varying_responder() -> Any:
    """A summary that differs on every call (so a second provider call for one prompt shows), a fixed lexicon
    label for sentiment, and a valid judge verdict."""

    def respond(request: FakeRequest) -> Any:
        schema = request.wants_json_schema or (request.tool.input_schema if request.tool else None)
        properties = (schema or {}).get("properties", {})
        if "rating" in properties:
            answer = {"rating": LEVELS[3], "reason": "covers the main points."}
        elif "label" in properties:
            answer = {"label": "positive" if "good" in request.prompt_text.lower() else "negative"}
        else:
            return f"summary {uuid.uuid4().hex[:12]}"
        return answer if request.tool else json.dumps(answer)

    return respond


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


class RssSampler:
    """Samples the RSS of a process and its children until stopped."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid = pid
        self.interval = interval
        self.peak_total = 0.0
        self.peak_worker = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            workers = [current_rss_mb(child) for child in _children(self.pid)]
            self.peak_total = max(self.peak_total, current_rss_mb(self.pid) + sum(workers))
            self.peak_worker = max([self.peak_worker, *workers])


def _percentile_ms(values: list[float], fraction: float) -> float:
    return round(quantile(values, fraction), 1) if values else 0.0


def _pool(kind: str, size: int) -> list[dict[str, Any]]:
    _, data = CONFIGS[kind]
    with data.open(encoding="utf-8") as handle:
        return [json.loads(line) for line, _ in zip(handle, range(size))]


class _Project(BaseModel):
    id: int
    kind: str
    xml: str

    @property
    def config(self) -> LabelConfig:
        return parse_label_config(self.xml)


def run_load(config: LoadConfig) -> LoadReport:
    report = LoadReport(workers=config.workers, projects=config.projects)
    rng = random.Random(config.seed)
    kinds = ["summarization", "classification"]
    projects = [
        _Project(id=index + 1, kind=kinds[index % 2], xml=CONFIGS[kinds[index % 2]][0].read_text(encoding="utf-8"))
        for index in range(config.projects)
    ]
    pools = {kind: _pool(kind, config.pool_size) for kind in kinds}
    jobs: list[tuple[str, _Project, Any]] = []
    for project in projects:
        for _ in range(config.requests_per_project):
            jobs.append(("predict", project, rng.sample(range(len(pools[project.kind])), config.tasks_per_request)))
        for number in range(config.webhooks_per_project):
            jobs.append(("webhook", project, number))
    rng.shuffle(jobs)

    labels: dict[tuple[str, int], set[str]] = defaultdict(set)
    asked: dict[tuple[str, int], int] = defaultdict(int)
    predict_ms: list[float] = []
    webhook_ms: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()

    with (
        tempfile.TemporaryDirectory(prefix="prelabel-load-") as work,
        FakeProvider(varying_responder(), latency=config.latency, seed=config.seed) as provider,
        FakeLabelStudio(latency=0.005) as label_studio,
    ):
        for project in projects:
            label_studio.configs[project.id] = project.xml
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PRELABEL_", "OPENAI_", "ANTHROPIC_", "BASIC_AUTH", "LABEL_STUDIO_"))
        }
        env.update(provider.env())
        env.update(label_studio.env(), MODEL_DIR=work, PRELABEL_CONCURRENCY="16", PYTHONPATH=str(ROOT))
        log = Path(work) / "backend.log"
        session = requests.Session()
        with serve_in_background(free_port(), env, log, workers=config.workers, threads=config.threads) as backend:
            url = backend.url
            with RssSampler(backend.pid) as sampler:

                def run(job: tuple[str, _Project, Any]) -> None:
                    if time.monotonic() - started > config.time_limit_s:
                        report.stopped_by_time_limit = True
                        return
                    kind, project, detail = job
                    if kind == "predict":
                        _predict(
                            session,
                            url,
                            project,
                            pools[project.kind],
                            detail,
                            config,
                            report,
                            labels,
                            asked,
                            predict_ms,
                            lock,
                        )
                    else:
                        _webhook(session, url, label_studio, project, pools, detail, report, webhook_ms, lock)

                with ThreadPoolExecutor(config.client_threads) as pool:
                    for _ in pool.map(run, jobs):
                        pass
                report.wall_s = time.monotonic() - started
            report.peak_rss_total_mb = round(sampler.peak_total, 1)
            report.peak_rss_worker_mb = round(sampler.peak_worker, 1)
        report.provider_calls = provider.count
        with sqlite3.connect(Path(work) / "prelabel.sqlite3") as db:
            report.webhooks_recorded = db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0]

    report.items_labeled_twice = sum(1 for count in asked.values() if count > 1)
    report.inconsistent_items = sum(1 for key, seen in labels.items() if len(seen) > 1)
    report.predict_p50_ms = _percentile_ms(predict_ms, 0.5)
    report.predict_p95_ms = _percentile_ms(predict_ms, 0.95)
    report.webhook_p95_ms = _percentile_ms(webhook_ms, 0.95)
    report.webhook_max_ms = round(max(webhook_ms, default=0.0), 1)
    return report


def _predict(
    session: requests.Session,
    url: str,
    project: _Project,
    pool: list[dict[str, Any]],
    indexes: list[int],
    config: LoadConfig,
    report: LoadReport,
    labels: dict[tuple[str, int], set[str]],
    asked: dict[tuple[str, int], int],
    timings: list[float],
    lock: threading.Lock,
) -> None:
    key = project.config.data_key
    tasks = [{"id": project.id * 100_000 + index, "data": {key: pool[index][key]}} for index in indexes]
    body = {"tasks": tasks, "project": f"{project.id}.{int(time.time())}", "label_config": project.xml}
    began = time.perf_counter()
    try:
        answer = session.post(f"{url}/predict", json=body, timeout=120)
        results = answer.json()["results"] if answer.ok else None
    except (requests.RequestException, ValueError, KeyError) as error:
        results, answer = None, None
        problem = f"/predict project {project.id}: {type(error).__name__}: {error}"
    elapsed = (time.perf_counter() - began) * 1000
    with lock:
        report.predict_requests += 1
        timings.append(elapsed)
        if results is None or len(results) != len(tasks):
            report.errors.append(
                problem
                if answer is None
                else f"/predict project {project.id}: HTTP "
                f"{answer.status_code}, {len(results or [])} results for {len(tasks)} tasks"
            )
            report.tasks_without_result += len(tasks)
            return
        report.tasks += len(tasks)
        for index, item in zip(indexes, results):
            if "result" not in item:
                report.tasks_without_result += 1
                continue
            text = next(
                (
                    r["value"].get("text", r["value"].get("choices"))
                    for r in item["result"]
                    if r["from_name"] == project.config.label.name
                ),
                None,
            )
            asked[(project.kind, index)] += 1
            labels[(project.kind, index)].add(json.dumps(text))


def _webhook(
    session: requests.Session,
    url: str,
    label_studio: FakeLabelStudio,
    project: _Project,
    pools: dict[str, list[dict[str, Any]]],
    number: int,
    report: LoadReport,
    timings: list[float],
    lock: threading.Lock,
) -> None:
    """A reviewer's annotation saved in "Label Studio", then its webhook (which carries only the ids the backend
    reads)."""
    config = project.config
    task_id = project.id * 100_000 + number % len(pools[project.kind])
    label = "A reviewer's summary." if project.kind == "summarization" else config.class_labels[0]
    annotation_id = project.id * 100_000 + number
    label_studio.add_annotation(annotation_id, project=project.id, task=task_id, result=config.review_result(label, 2))
    event = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": project.id},
        "task": {"id": task_id},
        "annotation": {"id": annotation_id, "task": task_id},
    }
    began = time.perf_counter()
    try:
        ok = session.post(f"{url}/webhook", json=event, timeout=10).status_code == 201
    except requests.RequestException as error:
        ok = False
        with lock:
            report.errors.append(f"/webhook project {project.id}: {type(error).__name__}")
    elapsed = (time.perf_counter() - began) * 1000
    with lock:
        report.webhooks_sent += 1
        report.webhooks_answered += ok
        timings.append(elapsed)


def print_report(report: LoadReport) -> None:
    from rich.console import Console
    from rich.table import Table

    expected_webhooks = report.webhooks_sent
    rows = [
        ("worker processes / projects", f"{report.workers} / {report.projects}", ""),
        ("/predict requests, tasks", f"{report.predict_requests}, {report.tasks}", ""),
        ("tasks without a result", str(report.tasks_without_result), "0"),
        ("tasks per second", f"{report.tasks_per_s:,.1f}", ""),
        ("/predict p50 / p95", f"{report.predict_p50_ms:,.0f} / {report.predict_p95_ms:,.0f} ms", "< 100,000 ms"),
        (
            "webhooks answered / recorded",
            f"{report.webhooks_answered} / {report.webhooks_recorded}",
            f"{expected_webhooks} / {expected_webhooks}",
        ),
        ("webhook p95 / max", f"{report.webhook_p95_ms:,.0f} / {report.webhook_max_ms:,.0f} ms", "< 1,000 ms"),
        ("items asked for twice, inconsistent", f"{report.items_labeled_twice}, {report.inconsistent_items}", "-, 0"),
        ("provider calls", str(report.provider_calls), ""),
        (
            "peak RSS all / one worker",
            f"{report.peak_rss_total_mb:,.0f} / {report.peak_rss_worker_mb:,.0f} MB",
            "- / < 300 MB",
        ),
    ]
    table = Table(title="prelabel backend under load (127.0.0.1)")
    for column in ("figure", "measured", "expected"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for error in report.errors[:10]:
        console.print(f"[red]{error}[/red]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--projects", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20, help="/predict requests per project")
    parser.add_argument("--tasks", type=int, default=10, help="tasks per /predict")
    parser.add_argument("--webhooks", type=int, default=30, help="webhooks per project")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake provider takes per call")
    args = parser.parse_args()
    report = run_load(
        LoadConfig(
            workers=args.workers,
            projects=args.projects,
            requests_per_project=args.requests,
            tasks_per_request=args.tasks,
            webhooks_per_project=args.webhooks,
            latency=args.latency,
        )
    )
    print_report(report)
    healthy = (
        report.tasks_without_result == 0
        and report.inconsistent_items == 0
        and not report.errors
        and report.webhooks_recorded == report.webhooks_sent == report.webhooks_answered
    )
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
