"""A tiny stand-in for the two Label Studio reads the backend's /webhook makes (GET /api/annotations/{id}/ and
GET /api/projects/{id}/), on 127.0.0.1, for the integration tests and the load benchmark. It checks the token as
Label Studio does (a legacy token as `Token <key>`; a personal access token, a JWT refresh token, exchanged at
POST /api/token/refresh/ for an access token sent as `Bearer`), answers 404 for what it does not hold, and can be
made slow. The end-to-end tests use the real Label Studio instead."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANNOTATION = re.compile(r"^/api/annotations/(\d+)/?$")
PROJECT = re.compile(r"^/api/projects/(\d+)/?$")


def personal_access_token(user: int = 1) -> str:
    """A JWT shaped like Label Studio's personal access tokens (a refresh token; the fake checks no signature)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"token_type": "refresh", "exp": int(time.time()) + 3600, "user_id": user}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.signature"


class FakeLabelStudio:
    """Annotations and project configs held in memory; `token` is the API key the backend must send."""

    def __init__(self, token: str = "fake-label-studio-token", latency: float = 0.0):
        self.token = token
        self.latency = latency
        self.annotations: dict[int, dict[str, Any]] = {}
        self.configs: dict[int, str] = {}
        self.reads: list[str] = []
        self.exchanges = 0  # personal access token exchanges
        self.access = "access-0"  # the access token a personal access token is exchanged for
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def env(self) -> dict[str, str]:
        return {"LABEL_STUDIO_URL": self.url, "LABEL_STUDIO_API_KEY": self.token}

    def add_annotation(
        self,
        annotation_id: int,
        *,
        project: int,
        task: int,
        result: list[dict[str, Any]],
        parent_prediction: int | None = None,
        was_cancelled: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        record = {
            "id": annotation_id,
            "project": project,
            "task": task,
            "result": result,
            "parent_prediction": parent_prediction,
            "was_cancelled": was_cancelled,
            "completed_by": 1,
            "updated_at": "2026-01-01T00:00:00Z",
            **extra,
        }
        with self._lock:
            self.annotations[annotation_id] = record
        return record

    def expire_access(self) -> None:
        """The current access token stops working (as one does after its few minutes)."""
        with self._lock:
            self.access = f"access-{int(self.access.split('-')[1]) + 1}"

    def authorized(self, header: str | None) -> bool:
        return header in (f"Token {self.token}", f"Bearer {self.access}")

    def start(self) -> FakeLabelStudio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with fake._lock:
                    fake.reads.append(self.path)
                if fake.latency:
                    time.sleep(fake.latency)
                if not fake.authorized(self.headers.get("Authorization")):
                    return self._answer(401, {"detail": "Authentication credentials were not provided."})
                found: Any = None
                if match := ANNOTATION.match(self.path.split("?", 1)[0]):
                    found = fake.annotations.get(int(match.group(1)))
                elif match := PROJECT.match(self.path.split("?", 1)[0]):
                    config = fake.configs.get(int(match.group(1)))
                    found = {"id": int(match.group(1)), "label_config": config} if config else None
                if found is None:
                    return self._answer(404, {"detail": "Not found."})
                return self._answer(200, found)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/api/token/refresh/" or body.get("refresh") != fake.token:
                    return self._answer(401, {"detail": "Token is invalid or expired"})
                with fake._lock:
                    fake.exchanges += 1
                return self._answer(200, {"access": fake.access})

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLabelStudio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
