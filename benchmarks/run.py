"""prelabel's speed and memory against a fake provider with a fixed latency, side by side with the targets.

    python -m benchmarks.run [--latency 0.25] [--quick]

(a) /predict on 100 DialogSum tasks through the Flask app over real HTTP, against a sequential reference
    backend (task after task, annotator then judge, a fresh openai client per call, as the Label Studio
    LLM example backend does), and against the ideal ceil(100 / concurrency) x 2 x latency;
(b) `label` on 5,000 distinct items at concurrency 64 against the ideal ceil(n / 64) x 2 x latency;
(c) the same pool again into a fresh output: every call is a cache hit;
(d) peak RSS labeling 100,000 items (DialogSum dialogues repeated with distinct ids);
(e) start-up: `prelabel --help` in a fresh process beside `python -c pass`, and the heavy modules the help
    screens load (benchmarks.startup).

(b), (c) and (d) each label in a process of their own, as separate `prelabel label` runs do.

The fake provider runs in its own process, so its HTTP work does not share the measured process's GIL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel import label_config
from prelabel.data import dialogsum_dev

ROOT = Path(__file__).resolve().parent.parent
# The full corpus beside the checkout when it is there, else the slice shipped inside the package.
DATA_DIRS = [ROOT.parent / "shared" / "data" / "dialogsum", dialogsum_dev().parent]
SUMMARY_CONFIG = label_config.path("summarization")
TARGET_ITEMS = 5000  # the pool size of the (b) and (c) targets


class Row(BaseModel):
    figure: str
    measured: str
    reference: str
    ok: bool | None = None


def dialogues() -> list[dict[str, Any]]:
    for folder in DATA_DIRS:
        files = sorted(folder.glob("*.jsonl")) if folder.exists() else []
        if files:
            rows: list[dict[str, Any]] = []
            for path in files:
                with path.open(encoding="utf-8") as handle:
                    rows += [json.loads(line) for line in handle if line.strip()]
            return rows
    raise SystemExit("no DialogSum data found in ../shared/data or the package")


def write_pool(path: Path, count: int, distinct_prompts: bool) -> None:
    """`count` items with distinct ids; with distinct_prompts every dialogue differs (no cache hits)."""
    source = dialogues()
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            record = source[index % len(source)]
            dialogue = record["dialogue"]
            if distinct_prompts:
                dialogue += f"\n#Person1#: Reference {index}."
            handle.write(json.dumps({"id": f"item-{index}", "dialogue": dialogue}) + "\n")


@contextmanager
def fake_provider(latency: float) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "prelabel.testing.serve", "--latency", str(latency)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url:
            raise SystemExit("the fake provider did not start")
        yield url
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def provider_env(url: str, model_dir: Path, concurrency: int | None = None) -> dict[str, str]:
    env = {
        "PRELABEL_ANNOTATOR": "openai:gpt-4o-mini",
        "PRELABEL_JUDGE": "anthropic:claude-haiku-4-5",
        "OPENAI_BASE_URL": f"{url}/v1",
        "ANTHROPIC_BASE_URL": url,
        "OPENAI_API_KEY": "sk-bench",
        "ANTHROPIC_API_KEY": "sk-ant-bench",
        "MODEL_DIR": str(model_dir),
        "PRELABEL_TIMEOUT": "60",
        "LOG_LEVEL": "WARNING",
    }
    if concurrency:
        env["PRELABEL_CONCURRENCY"] = str(concurrency)
    return env


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def serve(app: Any) -> Iterator[str]:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def reference_app(url: str) -> Any:
    """The sequential reference: one task after another, annotator then judge, a new client per call."""
    import openai
    from flask import Flask, jsonify, request

    from prelabel.prompts import PROMPTS_DIR

    summarize = (PROMPTS_DIR / "summarize.txt").read_text(encoding="utf-8")
    judge = (PROMPTS_DIR / "judge_summary.txt").read_text(encoding="utf-8")
    app = Flask("reference")

    def ask(prompt: str) -> str:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-bench")
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], max_tokens=512
        )
        return answer.choices[0].message.content or ""

    @app.post("/predict")
    def predict() -> Any:
        results = []
        for task in request.get_json()["tasks"]:
            text = task["data"]["dialogue"]
            summary = ask(summarize.replace("{input}", text))
            rating = ask(judge.replace("{input}", text).replace("{label}", summary))
            results.append({"result": [{"value": {"text": [summary]}}], "score": 0.5, "rating": rating})
        return jsonify({"results": results})

    return app


def post_predict(base: str, tasks: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    import requests

    config = SUMMARY_CONFIG.read_text(encoding="utf-8")
    started = time.perf_counter()
    response = requests.post(
        f"{base}/predict", json={"tasks": tasks, "project": "1.1", "label_config": config}, timeout=600
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def bench_predict(url: str, latency: float, work: Path, tasks_count: int, reference_count: int) -> list[Row]:
    from prelabel.app import create_app
    from prelabel.engine import close_engine
    from prelabel.settings import Settings

    source = dialogues()
    tasks = [
        {"id": i + 1, "data": {"dialogue": source[i % len(source)]["dialogue"] + f"\n#Person1#: Predict {i}."}}
        for i in range(tasks_count)
    ]
    with environment(provider_env(url, work / "predict-store")):
        settings = Settings()
        app = create_app(settings)  # the engine the backend builds for itself, as under gunicorn
        try:
            with serve(app) as base:
                prelabel_s, body = post_predict(base, tasks)
        finally:
            close_engine(app.extensions["prelabel.engine"])
    ok = sum(1 for item in body["results"] if "result" in item)
    with serve(reference_app(url)) as base:
        reference_s, _ = post_predict(base, tasks[:reference_count])
    reference_s *= tasks_count / reference_count
    concurrency = settings.prelabel_concurrency
    ideal = math.ceil(tasks_count / concurrency) * 2 * latency
    scaled = "" if reference_count == tasks_count else f" (measured on {reference_count}, scaled)"
    return [
        Row(
            figure=f"(a) /predict {tasks_count} tasks, prelabel",
            measured=f"{prelabel_s:.2f} s ({ok} labeled)",
            reference=f"sequential reference {reference_s:.2f} s{scaled}",
        ),
        Row(
            figure="(a) speed-up over the sequential reference",
            measured=f"{reference_s / prelabel_s:.1f}x",
            reference=">= 10x",
            ok=reference_s / prelabel_s >= 10 and ok == tasks_count,
        ),
        Row(
            figure=f"(a) prelabel vs ideal (concurrency {concurrency})",
            measured=f"{prelabel_s / ideal:.2f}x",
            reference=f"ideal {ideal:.2f} s",
        ),
    ]


class LabelReport(BaseModel):
    """What benchmarks.label_child prints."""

    peak_rss_mb: float
    baseline_rss_mb: float
    labeled: int
    failed: int
    elapsed_s: float
    items_per_s: float


def run_label(url: str, model_dir: Path, pool: Path, output: Path, concurrency: int) -> LabelReport:
    """Label `pool` in a fresh process, as a `prelabel label` run is: nothing an earlier figure left in this
    process (clients, threads, garbage) weighs on the one measured."""
    env = {**os.environ, **provider_env(url, model_dir, concurrency)}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.label_child", str(pool), str(output), str(concurrency)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise SystemExit(f"labeling {pool.name} failed:\n{result.stderr[-2000:]}")
    return LabelReport.model_validate_json(result.stdout.strip().splitlines()[-1])


def bench_label(url: str, latency: float, work: Path, items: int, concurrency: int) -> list[Row]:
    pool = work / "pool.jsonl"
    write_pool(pool, items, distinct_prompts=True)
    first = run_label(url, work / "label-store", pool, work / "first.jsonl", concurrency)
    ideal = math.ceil(items / concurrency) * 2 * latency
    ratio = first.elapsed_s / ideal
    overhead_ms = (first.elapsed_s - ideal) / items * 1000
    second = run_label(url, work / "label-store", pool, work / "second.jsonl", concurrency)
    complete = first.labeled == items and second.labeled == items
    # The targets hold for a pool of TARGET_ITEMS: on a smaller one (--quick) a run's fixed start-up costs
    # (connections, SQLite connections per thread, first-use work in the SDKs) weigh more, so a miss there
    # says nothing about the target and is shown, not judged.
    judged = items >= TARGET_ITEMS
    note = "" if judged else f" (target at {TARGET_ITEMS:,} items)"
    return [
        Row(
            figure=f"(b) label {items:,} items, concurrency {concurrency}",
            measured=f"{first.elapsed_s:.2f} s ({first.labeled:,} labeled, {first.failed} failed)",
            reference=f"ideal {ideal:.2f} s",
        ),
        Row(
            figure="(b) label vs ideal",
            measured=f"{ratio:.3f}x",
            reference="<= 1.15x" + note,
            ok=(ratio <= 1.15 and complete) if judged else None,
        ),
        Row(
            figure="(b) overhead per item (wall)",
            measured=f"{overhead_ms:.2f} ms",
            reference=f"{1000 * ideal * 0.15 / items:.2f} ms at 1.15x",
        ),
        Row(
            figure=f"(c) cached rerun of the {items:,} items",
            measured=f"{second.items_per_s:,.0f} items/s ({second.elapsed_s:.2f} s)",
            reference="> 2,000 items/s" + note,
            ok=(second.items_per_s > 2000 and complete) if judged else None,
        ),
    ]


def bench_memory(url: str, work: Path, items: int, concurrency: int) -> list[Row]:
    pool = work / "memory-pool.jsonl"
    write_pool(pool, items, distinct_prompts=False)
    started = time.perf_counter()
    report = run_label(url, work / "memory-store", pool, work / "memory-out.jsonl", concurrency)
    return [
        Row(
            figure=f"(d) peak RSS labeling {items:,} items",
            measured=f"{report.peak_rss_mb:.0f} MB ({report.labeled:,} labeled in "
            f"{time.perf_counter() - started:.0f} s; "
            f"{report.baseline_rss_mb:.0f} MB before the first item)",
            reference="< 300 MB",
            ok=report.peak_rss_mb < 300 and report.labeled == items,
        ),
    ]


def bench_startup() -> list[Row]:
    from benchmarks.startup import HEAVY_MODULES, NEVER_AT_HELP, help_imports, median_wall_time

    help_s = median_wall_time([sys.executable, "-m", "prelabel", "--help"])
    python_s = median_wall_time([sys.executable, "-c", "pass"])
    imports = help_imports(heavy=HEAVY_MODULES)
    loaded = imports.loaded
    return [
        Row(
            figure="(e) `prelabel --help` start-up (median of 7 fresh processes)",
            measured=f"{help_s:.2f} s (python -c pass {python_s:.2f} s)",
            reference="< 0.3 s on 2 cores",
            ok=help_s < 0.3,
        ),
        Row(
            figure=f"(e) heavy modules loaded by --help ({len(imports.steps) - 1} help screens)",
            measured=", ".join(loaded) or "none",
            reference=f"none of {', '.join(NEVER_AT_HELP)}",
            ok=not set(loaded) & set(NEVER_AT_HELP),
        ),
    ]


def print_table(rows: list[Row], latency: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"prelabel benchmarks (fake provider, {latency * 1000:.0f} ms per call)")
    for column in ("figure", "measured", "reference / target", ""):
        table.add_column(column)
    for row in rows:
        verdict = "" if row.ok is None else ("[green]pass[/green]" if row.ok else "[red]FAIL[/red]")
        table.add_row(row.figure, row.measured, row.reference, verdict)
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per fake provider call")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller pools (a tenth; 20 reference tasks); (b) and (c) are shown, not judged",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="label concurrency for (b)-(d)")
    parser.add_argument("--items", type=int, default=None, help="pool size for (b) and (c) (default 5,000)")
    parser.add_argument("--memory-items", type=int, default=None, help="pool size for (d) (default 100,000)")
    parser.add_argument(
        "--only", choices=["predict", "label", "memory", "startup"], action="append", help="run only these"
    )
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    items = args.items or TARGET_ITEMS // scale
    memory_items = args.memory_items or 100_000 // scale
    parts = args.only or ["predict", "label", "memory", "startup"]
    rows: list[Row] = []
    if "startup" in parts:  # first, before the fake provider and the labeling runs share the cores
        rows += bench_startup()
    with tempfile.TemporaryDirectory(prefix="prelabel-bench-") as tmp, fake_provider(args.latency) as url:
        work = Path(tmp)
        if "predict" in parts:
            rows += bench_predict(url, args.latency, work, 100, 20 if args.quick else 100)
        if "label" in parts:
            rows += bench_label(url, args.latency, work, items, args.concurrency)
        if "memory" in parts:
            rows += bench_memory(url, work, memory_items, args.concurrency)
    print_table(rows, args.latency)
    return 0 if all(row.ok is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
