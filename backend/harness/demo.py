"""The demo of the whole loop on real data: Label Studio on SQLite, the prelabel backend, a model pair
(hosted when both provider keys are set, else a local model), a random round of real dialogues, predictions
through Label Studio, and a table with the URL and login to review them.

Every process the demo starts is stopped when it ends, fails, or is interrupted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests
from pydantic import BaseModel

from prelabel import label_config
from prelabel.data import DIALOGSUM_ATTRIBUTION, dialogsum_dev
from prelabel.harness.backend_process import serve_in_background
from prelabel.harness.labelstudio_server import LabelStudioServer, PortInUseError
from prelabel.labelstudio import LabelStudioClient
from prelabel.push import push_round, tally_stored
from prelabel.records import reviewed_tasks
from prelabel.tally import Tally

DEMO_PROJECT = "prelabel demo: DialogSum summaries"
POOL_ATTRIBUTION = f"{DIALOGSUM_ATTRIBUTION}; see prelabel/data/dialogsum/README.md"

Say = Callable[[str], None]


class DemoError(RuntimeError):
    """A step of the demo failed; the message says what and what to do."""


class DemoOptions(BaseModel):
    work_dir: Path = Path(".prelabel") / "demo"
    ls_port: int = 8080
    backend_port: int = 9090
    sample: int = 15
    seed: int | None = None
    predict_timeout: float = 300.0


class DemoRow(BaseModel):
    task_id: int
    source_id: str | None
    rating: str | None
    score: float | None
    summary: str | None


class DemoResult(BaseModel):
    url: str
    project_url: str
    username: str
    password: str
    token: str  # Label Studio's API token, for the engineer's commands (LABEL_STUDIO_API_KEY)
    project_id: int
    round: str
    model_version: str | None
    annotator: str
    judge: str
    warning: str | None
    rows: list[DemoRow]
    outcomes: Tally = Tally()  # the round's stored predictions: rated, unrated with reasons, failed


def hosted_keys_present(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("OPENAI_API_KEY")) and bool(env.get("ANTHROPIC_API_KEY"))


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def local_model_env(options: DemoOptions, say: Say) -> Iterator[dict[str, str]]:
    """Start the bundled local model (one server per role, so both cores work) and yield the environment
    that points the annotator and the judge at them."""
    from prelabel.harness.local_model import (
        DEFAULT_MODEL,
        LocalModelServer,
        ensure_local_runtime,
        find_model_file,
    )

    say("No OPENAI_API_KEY and ANTHROPIC_API_KEY: using a local model (SmolLM2-135M-Instruct, llama.cpp).")
    python = ensure_local_runtime(progress=say)
    model_file = find_model_file(DEFAULT_MODEL)
    servers = []
    try:
        for role in ("annotator", "judge"):
            server = LocalModelServer(python, log_path=options.work_dir / f"local-model-{role}.log")
            servers.append(server)
            # Log-probabilities of this server come before its JSON grammar applies, so they would not
            # give a fair G-Eval score; without them the model runs about twice as fast.
            server.start(model_file, alias=DEFAULT_MODEL, n_ctx=2048, logprobs=False, n_threads=1)
        annotator, judge = servers
        say(f"Local model servers up at {annotator.base_url} and {judge.base_url} ({annotator.model_name}).")
        # One small model of one family serves both roles, so the same-family override is on and shown.
        yield {
            "PRELABEL_ANNOTATOR": f"openai:{annotator.model_name}",
            "PRELABEL_JUDGE": f"openai:{judge.model_name}",
            "PRELABEL_ANNOTATOR_BASE_URL": annotator.base_url,
            "PRELABEL_JUDGE_BASE_URL": judge.base_url,
            "PRELABEL_ALLOW_SAME_FAMILY": "1",
            "PRELABEL_JUDGE_LOGPROBS": "0",
            "PRELABEL_JUDGE_REASON_MAX_CHARS": "160",
            # Each local server answers one request at a time; more in flight would only queue.
            "PRELABEL_CONCURRENCY": "2",
            "PRELABEL_ANNOTATOR_MAX_TOKENS": "120",
            "PRELABEL_JUDGE_MAX_TOKENS": "100",
        }
    finally:
        for server in servers:
            server.stop()


@contextmanager
def backend_process(env: dict[str, str], port: int, log_path: Path, say: Say) -> Iterator[str]:
    """`prelabel serve` in its own process group, stopped on exit."""
    if _port_busy(port):
        raise DemoError(f"port {port} is in use: stop what listens there, or pass --backend-port")
    with serve_in_background(port, {**os.environ, **env}, log_path, error=DemoError) as backend:
        say(f"prelabel backend up at {backend.url}.")
        yield backend.url


def wait_for_predictions(
    client: LabelStudioClient, project_id: int, task_ids: list[int], timeout: float, say: Say
) -> list[dict[str, Any]]:
    """Ask Label Studio for predictions until every task of the round has one, or the time is up.

    A task whose LLM calls failed holds no prediction of the current model_version, so asking again
    retries exactly those."""
    wanted = set(task_ids)
    deadline = time.monotonic() + timeout
    asked_at = 0.0
    while True:
        tasks = [task for task in client.export(project_id, title="prelabel demo") if task["id"] in wanted]
        done = [task for task in tasks if any(p.get("result") for p in task.get("predictions") or [])]
        if len(done) == len(wanted):
            return tasks
        if time.monotonic() > deadline:
            raise DemoError(
                f"{len(done)} of {len(wanted)} tasks have predictions after {timeout:.0f} s: see the backend log"
            )
        # Label Studio answers the action only after /predict returns, so at most one is in flight.
        if time.monotonic() - asked_at > 5:
            missing = [task["id"] for task in tasks if task["id"] not in {d["id"] for d in done}]
            say(f"asking Label Studio for predictions of {len(missing)} tasks...")
            client.retrieve_predictions(project_id, missing)
            asked_at = time.monotonic()
        time.sleep(1)


def run_demo(options: DemoOptions, say: Say, stack: ExitStack) -> DemoResult:
    """Bring everything up (stopped by `stack`), push a round, get predictions, return the table."""
    options.work_dir.mkdir(parents=True, exist_ok=True)
    for port, option in ((options.ls_port, "--ls-port"), (options.backend_port, "--backend-port")):
        if _port_busy(port):
            raise DemoError(f"port {port} is in use: stop what listens there, or pass {option}")

    if hosted_keys_present():
        say("OPENAI_API_KEY and ANTHROPIC_API_KEY are set: using the hosted pair.")
        model_env: dict[str, str] = {}
    else:
        model_env = stack.enter_context(local_model_env(options, say))

    server = LabelStudioServer(options.work_dir / "label-studio", port=options.ls_port)
    say(f"Starting Label Studio on {server.url} (the first start migrates its database: about a minute)...")
    try:
        server.start(timeout=300)
    except PortInUseError as error:
        raise DemoError(str(error)) from None
    stack.callback(server.stop)

    # The backend reads each reviewed annotation back from Label Studio (its webhook trusts nothing it is sent).
    backend_env = {
        **model_env,
        "MODEL_DIR": str(options.work_dir / "model_dir"),
        "LABEL_STUDIO_URL": server.url,
        "LABEL_STUDIO_API_KEY": server.token or "",
    }
    backend_url = stack.enter_context(
        backend_process(backend_env, options.backend_port, options.work_dir / "backend.log", say)
    )
    health = requests.get(f"{backend_url}/health", timeout=5).json()

    client = LabelStudioClient(server.url, server.token or "")
    say(f"Pushing a random round of {options.sample} dialogues ({POOL_ATTRIBUTION})...")
    result = push_round(
        client,
        label_config.read("summarization"),
        DEMO_PROJECT,
        dialogsum_dev(),
        sample=options.sample,
        seed=options.seed,
        keep_fields=("topic",),
        backend_url=backend_url,
    )
    if not result.task_ids:
        raise DemoError("every dialogue of the pool has been pushed to the demo project; remove .prelabel/demo")
    tasks = wait_for_predictions(client, result.project_id, result.task_ids, options.predict_timeout, say)

    from prelabel.label_interface import parse_label_config

    config = parse_label_config(label_config.read("summarization"))
    rows = []
    model_version = None
    for record in sorted(reviewed_tasks(config, tasks), key=lambda r: r.task_id):
        from prelabel.judge import LEVELS

        model_version = record.model_version or model_version
        rows.append(
            DemoRow(
                task_id=record.task_id,
                source_id=record.source_id,
                rating=LEVELS[record.llm_level] if record.llm_level is not None else None,
                score=record.llm_score,
                summary=record.llm_label,
            )
        )
    return DemoResult(
        url=server.url,
        project_url=f"{server.url}/projects/{result.project_id}/data",
        username=server.username,
        password=server.password or "",
        token=server.token or "",
        project_id=result.project_id,
        round=result.round,
        model_version=model_version,
        annotator=health["annotator"],
        judge=health["judge"],
        warning=health.get("warning"),
        rows=rows,
        outcomes=tally_stored(client, result.project_id, result.task_ids, config),
    )
