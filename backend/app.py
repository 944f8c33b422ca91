"""The ML backend over HTTP, speaking the Label Studio protocol: GET /health and /, POST /setup, /predict,
/webhook, GET /metrics.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, Field, ValidationError

from prelabel.engine import Engine, build_engine
from prelabel.label_interface import LabelConfigError, parse_label_config
from prelabel.labelstudio_reads import LabelStudioError, LabelStudioReads
from prelabel.model import ContextError, PrelabelModel
from prelabel.predictions import split_prompt_control
from prelabel.settings import Settings
from prelabel.store import Store

log = logging.getLogger("prelabel")

# Label Studio's requests nest a few levels deep; far deeper JSON is refused before anything walks it.
MAX_JSON_DEPTH = 64


class BodyError(ValueError):
    """A request body that cannot be read as JSON within the limits; the message says why."""


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (walked without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def json_body() -> Any:
    """The request's JSON body, None when it is not JSON; BodyError when it nests deeper than MAX_JSON_DEPTH."""
    too_deep = BodyError(f"{request.path}: JSON body nests lists or objects more than {MAX_JSON_DEPTH} deep")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # the json parser gives up on very deep nesting before returning anything
        raise too_deep from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise too_deep
    return body


class SetupRequest(BaseModel):
    project: str | int | None = None
    label_config: str | None = Field(None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


class PredictRequest(BaseModel):
    tasks: list[Any]
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class Counters:
    """Per-process counters for /metrics (the store holds the cross-process LLM totals)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, float] = {}

    def add(self, name: str, amount: float = 1.0) -> None:
        with self._lock:
            self.values[name] = self.values.get(name, 0.0) + amount


NO_LABEL_STUDIO = (
    "the backend has no LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, so it cannot read annotations back from "
    "Label Studio and records no webhook; `prelabel pull` reads the reviews from Label Studio instead"
)


def body_limit(settings: Settings, path: str) -> int:
    """The most bytes a request body to `path` may have (the server reads no more; the app answers 413)."""
    if path == "/webhook":  # an event needs only its ids
        return settings.prelabel_webhook_max_kb * 1024
    return int(settings.prelabel_max_request_mb * 1024 * 1024)


def project_id(value: Any) -> str | None:
    """Label Studio sends the project as "<id>.<timestamp>" in /setup and /predict."""
    if value is None:
        return None
    return str(value).split(".", 1)[0]


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    settings = settings or Settings()
    engine = engine or build_engine(settings, store=Store(settings.store_path))  # rate limits shared by workers
    app = Flask("prelabel")
    app.config["MAX_CONTENT_LENGTH"] = body_limit(settings, "/predict")
    counters = Counters()
    app.extensions["prelabel.engine"] = engine
    credentials = settings.label_studio_credentials
    reads = LabelStudioReads(*credentials, timeout=settings.prelabel_webhook_timeout) if credentials else None
    told_no_label_studio = threading.Event()

    def error(status: int, message: str) -> tuple[Response, int]:
        return jsonify({"status": "error", "error": message}), status

    def label_config_for(project: str | None, sent: str | None) -> str | None:
        """The config sent (checked, then stored for the project) or the project's stored one."""
        if sent:
            parse_label_config(split_prompt_control(sent)[0])  # LabelConfigError before anything is stored
            if project:
                engine.store.save_project_config(project, sent)
            return sent
        return engine.store.project_config(project) if project else None

    @app.before_request
    def basic_auth() -> Any:
        user = settings.basic_auth_user
        # Label Studio sends annotation webhooks without the backend's basic auth: requiring it there would
        # silently lose every correction. /webhook trusts nothing it is sent: it reads the annotation back.
        if not user or request.path == "/webhook":
            return None
        password = settings.basic_auth_pass.get_secret_value() if settings.basic_auth_pass else ""
        auth = request.authorization
        if (
            auth is None
            or not hmac.compare_digest((auth.username or "").encode(), user.encode())
            or not hmac.compare_digest((auth.password or "").encode(), password.encode())
        ):
            return Response(
                '{"status": "error", "error": "unauthorized"}',
                401,
                {"WWW-Authenticate": 'Basic realm="prelabel"', "Content-Type": "application/json"},
            )
        return None

    @app.get("/")
    @app.get("/health")
    def health() -> Any:
        return jsonify(
            {
                "status": "UP",
                "model_class": "PrelabelModel",
                "annotator": engine.annotator_ref.spec,
                "judge": engine.judge_ref.spec,
                **({"jury": [ref.spec for ref in engine.judge_refs]} if len(engine.judge_refs) > 1 else {}),
                "warning": engine.family_warning,
            }
        )

    @app.post("/setup")
    def setup() -> Any:
        body = json_body()
        if not isinstance(body, dict):
            return error(400, "/setup expects a JSON object")
        try:
            payload = SetupRequest.model_validate(body)
        except ValidationError as problem:
            return error(400, f"/setup: {problem.errors()[0]['loc']}: {problem.errors()[0]['msg']}")
        project = project_id(payload.project)
        try:
            model = PrelabelModel(engine, label_config_for(project, payload.label_config), project)
            version = model.model_version
        except LabelConfigError as problem:
            return error(400, f"project {project}: {problem}")
        counters.add("setup_requests_total")
        return jsonify({"model_version": version})

    @app.post("/predict")
    def predict() -> Any:
        started = time.perf_counter()
        body = json_body()
        if not isinstance(body, dict):
            return error(400, "/predict expects a JSON object with a tasks list")
        try:
            payload = PredictRequest.model_validate(body)
        except ValidationError as problem:
            first = problem.errors()[0]
            return error(400, f"/predict field {'.'.join(map(str, first['loc']))}: {first['msg']}")
        limit = settings.prelabel_max_tasks_per_request
        if len(payload.tasks) > limit:
            # More than one request can label before Label Studio's 100 s timeout: it would store nothing.
            return error(
                413,
                f"/predict got {len(payload.tasks)} tasks; at most {limit} at a time "
                "(select fewer tasks, or raise PRELABEL_MAX_TASKS_PER_REQUEST)",
            )
        project = project_id(payload.project)
        try:
            model = PrelabelModel(engine, label_config_for(project, payload.label_config), project)
            results = model.predict(payload.tasks, context=(payload.params or {}).get("context"))
        except (LabelConfigError, ContextError) as problem:
            return error(400, f"project {project}: {problem}")
        failed = sum(1 for item in results if "result" not in item)
        counters.add("predict_requests_total")
        counters.add("predict_tasks_total", len(results))
        counters.add("predict_tasks_failed_total", failed)
        counters.add("predict_seconds_total", time.perf_counter() - started)
        return jsonify({"results": results, "model_version": results[0]["model_version"] if results else None})

    @app.post("/webhook")
    def webhook() -> Any:
        request.max_content_length = body_limit(settings, "/webhook")
        body = json_body()
        if not isinstance(body, dict) or "action" not in body:
            return error(400, "/webhook expects a Label Studio event with an action")
        action = str(body["action"])
        counters.add("webhook_events_total")
        if reads is None:
            if not told_no_label_studio.is_set():
                told_no_label_studio.set()
                log.warning("/webhook: %s", NO_LABEL_STUDIO)
            counters.add("webhook_ignored_total")
            return jsonify({"status": "ignored", "recorded": False, "reason": NO_LABEL_STUDIO}), 202
        model = PrelabelModel(engine)
        try:
            outcome = model.fit(action, body, source=reads)
        except LabelStudioError as problem:
            counters.add("webhook_errors_total")
            return error(503, f"event {action}: nothing recorded: {problem}")
        except (ValueError, LabelConfigError) as problem:
            counters.add("webhook_errors_total")
            return error(400, f"event {action}: {problem}")
        counters.add("webhook_recorded_total" if outcome["recorded"] else "webhook_unrecorded_total")
        return jsonify({"status": "ok", **outcome}), 201 if outcome["recorded"] else 200

    @app.get("/metrics")
    def metrics() -> Response:
        lines = []
        for name, value in sorted(counters.values.items()):
            lines += [f"# TYPE prelabel_{name} counter", f"prelabel_{name} {value:g}"]
        lines.append("# TYPE prelabel_llm_calls_total counter")
        for row in engine.store.usage_totals():
            labels = f'role="{row["role"]}",provider="{row["provider"]}",model="{row["model"]}"'
            for field in ("calls", "cache_hits", "errors", "input_tokens", "output_tokens"):
                lines.append(f"prelabel_llm_{field}_total{{{labels}}} {row[field] or 0}")
        for table, count in engine.store.counts().items():
            lines.append(f'prelabel_store_rows{{table="{table}"}} {count}')
        return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")

    @app.errorhandler(BodyError)
    def unreadable_body(problem: BodyError) -> Any:
        return error(400, str(problem))

    @app.errorhandler(413)
    def too_large(_: Any) -> Any:
        if request.path == "/webhook":
            return error(
                413,
                f"/webhook body over {settings.prelabel_webhook_max_kb} KB (PRELABEL_WEBHOOK_MAX_KB): "
                "an event needs only its ids",
            )
        return error(413, f"request body over {settings.prelabel_max_request_mb:g} MB (PRELABEL_MAX_REQUEST_MB)")

    @app.errorhandler(Exception)
    def unexpected(problem: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(problem, HTTPException):
            return error(problem.code or 500, problem.description or problem.name)
        log.exception("unexpected error in %s", request.path)
        return error(500, f"internal error ({type(problem).__name__}); see the backend log")

    return app
