"""A fake of the OpenAI Batch and Anthropic Message Batches APIs on 127.0.0.1, for driving the real SDKs.

It extends the fake provider: the live endpoints stay as they are (live retries reach the same server and are
recorded in `requests`), and every batch request is answered by the same responder as a live call, rendered in
the live answer's shape. Request and result shapes follow the providers' documentation:

- OpenAI: POST /v1/files (multipart, purpose "batch", JSONL lines {custom_id, method, url, body}),
  POST /v1/batches, GET /v1/batches/{id}, GET /v1/files/{id}/content; result lines
  {id, custom_id, response: {status_code, request_id, body}, error} in the output file (status 200) or the
  error file (other statuses, and `error: {code: "batch_expired", ...}` for requests an expired batch never ran).
- Anthropic: POST /v1/messages/batches {requests: [{custom_id, params}]}, GET /v1/messages/batches/{id},
  GET its results_url: JSONL {custom_id, result: {type: succeeded|errored|expired|canceled, ...}}, in no
  particular order.

Knobs: `polls_until_done` (status polls answered "in progress" first), `hold` (providers whose batches do not
end), `expire_plan` (the next batches end expired after running that many requests each), `request_error`
(per-request provider errors), `limits` (the documented per-job limits, enforced with a 400).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import ThreadingHTTPServer
from typing import Any

from .provider_server import (
    ANTHROPIC,
    OPENAI,
    FakeProvider,
    FakeRequest,
    Responder,
    _Handler,
    _Server,
    default_responder,
    error_body,
)

OPENAI_CHAT = "/v1/chat/completions"
ANTHROPIC_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


class FakeBatchError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class FakeBatch:
    id: str
    provider: str
    entries: list[dict[str, Any]]  # OpenAI lines or Anthropic requests, as submitted
    headers: dict[str, str]
    created_at: float = field(default_factory=time.time)
    input_file_id: str | None = None
    polls: int = 0
    expire_after: int | None = None
    ended: bool = False
    expired: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def request(self, entry: dict[str, Any]) -> FakeRequest:
        body = entry["body"] if self.provider == OPENAI else entry["params"]
        path = OPENAI_CHAT if self.provider == OPENAI else "/v1/messages"
        return FakeRequest(
            self.provider, path, str(body.get("model", "")), list(body.get("messages") or []), body, self.headers
        )

    @property
    def requests(self) -> list[FakeRequest]:
        return [self.request(entry) for entry in self.entries]


class _BatchHandler(_Handler):
    def do_GET(self) -> None:
        if not self.server.provider._batch_route(self, "GET"):  # type: ignore[attr-defined]
            super().do_GET()

    def do_POST(self) -> None:
        if not self.server.provider._batch_route(self, "POST"):  # type: ignore[attr-defined]
            super().do_POST()


class _BatchHTTPServer(_Server):
    def __init__(self, provider: FakeBatchServer) -> None:
        self.provider = provider
        self.connections = set()
        self.connections_lock = threading.Lock()
        self.opened = 0
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), _BatchHandler)


class FakeBatchServer(FakeProvider):
    """The fake provider plus both batch APIs."""

    def __init__(self, responder: Responder | None = None, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(responder, seed=seed, **kwargs)
        self.polls_until_done = 1
        self.hold: set[str] = set()  # providers whose batches do not end (a run to kill while it waits)
        self.expire_plan: list[int] = []  # per batch created, in order: requests it runs before it expires
        self.request_error: Callable[[FakeRequest], tuple[int, str] | None] | None = None
        self.limits: dict[str, tuple[int, int]] = {OPENAI: (50_000, 200_000_000), ANTHROPIC: (100_000, 256_000_000)}
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.batch_calls: list[tuple[str, str]] = []  # (method, path) of every batch API call
        self._batch_lock = threading.Lock()

    def start(self) -> FakeBatchServer:
        if self._server is None:
            self._stop.clear()
            self._server = _BatchHTTPServer(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-batch-server", daemon=True
            )
            self._thread.start()
        return self

    # -- what tests look at ---------------------------------------------------------------------------

    def created(self, provider: str | None = None) -> list[FakeBatch]:
        """Batches in creation order."""
        with self._batch_lock:
            return [b for b in self.batches.values() if provider is None or b.provider == provider]

    def release(self) -> None:
        """Let held batches end at their next poll."""
        self.hold = set()

    # -- routing --------------------------------------------------------------------------------------

    def _batch_route(self, handler: _Handler, method: str) -> bool:
        """Answer a batch API call; False for any other path (the live endpoints)."""
        path = handler.path.split("?")[0].rstrip("/")
        routes: list[tuple[str, str, Callable[..., tuple[int, bytes]]]] = [
            ("POST", r"/v1/files", self._upload),
            ("POST", r"/v1/batches", self._create_openai),
            ("GET", r"/v1/batches/(?P<id>[^/]+)", self._get_openai),
            ("GET", r"/v1/files/(?P<id>[^/]+)/content", self._file_content),
            ("POST", r"/v1/messages/batches", self._create_anthropic),
            ("GET", r"/v1/messages/batches/(?P<id>[^/]+)", self._get_anthropic),
            ("GET", r"/v1/messages/batches/(?P<id>[^/]+)/results", self._anthropic_results),
        ]
        for verb, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if verb != method or match is None:
                continue
            provider = ANTHROPIC if "/messages/" in path else OPENAI
            headers = {key.lower(): value for key, value in handler.headers.items()}
            raw = handler._read_body() if method == "POST" else b""
            with self._batch_lock:
                self.batch_calls.append((method, path))
            auth = headers.get("authorization", "")
            if not (auth.lower().startswith("bearer ") and auth[7:].strip()) and not headers.get("x-api-key"):
                handler._send(401, json.dumps(error_body(provider, 401)).encode())
                return True
            try:
                status, body = action(headers=headers, raw=raw, **match.groupdict())
            except FakeBatchError as error:
                status, body = error.status, json.dumps(error_body(provider, error.status, message=str(error))).encode()
            handler._send(status, body)
            return True
        return False

    # -- OpenAI ---------------------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + headers.get("content-type", "").encode() + b"\r\n\r\n" + raw
        )
        if not message.is_multipart():
            raise FakeBatchError(400, "expected multipart/form-data")
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)  # bytes for a part that is not itself multipart
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if fields.get("purpose", (None, b""))[1] != b"batch":
            raise FakeBatchError(400, "purpose must be 'batch'")
        if "file" not in fields:
            raise FakeBatchError(400, "missing file")
        filename, data = fields["file"]
        self._check_openai_lines(data)
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with self._batch_lock:
            self.files[file_id] = data
        return 200, json.dumps(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": filename or "upload.jsonl",
                "purpose": "batch",
                "status": "processed",
            }
        ).encode()

    def _check_openai_lines(self, data: bytes) -> None:
        max_requests, max_bytes = self.limits[OPENAI]
        if len(data) > max_bytes:
            raise FakeBatchError(400, f"file of {len(data)} bytes exceeds {max_bytes}")
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) > max_requests:
            raise FakeBatchError(400, f"{len(lines)} requests exceed {max_requests}")
        seen: set[str] = set()
        for number, line in enumerate(lines, start=1):
            entry = json.loads(line)
            if set(entry) != {"custom_id", "method", "url", "body"}:
                raise FakeBatchError(400, f"line {number}: fields {sorted(entry)}")
            if entry["method"] != "POST" or entry["url"] != OPENAI_CHAT:
                raise FakeBatchError(400, f"line {number}: method/url {entry['method']} {entry['url']}")
            if entry["custom_id"] in seen:
                raise FakeBatchError(400, f"line {number}: duplicate custom_id {entry['custom_id']}")
            seen.add(entry["custom_id"])
            if not entry["body"].get("model") or not entry["body"].get("messages"):
                raise FakeBatchError(400, f"line {number}: body without model or messages")

    def _create_openai(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        body = json.loads(raw)
        if body.get("endpoint") != OPENAI_CHAT or body.get("completion_window") != "24h":
            raise FakeBatchError(
                400, f"endpoint/completion_window {body.get('endpoint')} {body.get('completion_window')}"
            )
        data = self.files.get(body.get("input_file_id", ""))
        if data is None:
            raise FakeBatchError(404, "no such file")
        entries = [json.loads(line) for line in data.splitlines() if line.strip()]
        batch = FakeBatch(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            provider=OPENAI,
            entries=entries,
            headers=headers,
            input_file_id=body["input_file_id"],
            expire_after=self._next_expiry(),
        )
        with self._batch_lock:
            self.batches[batch.id] = batch
        return 200, json.dumps(self._openai_json(batch, body.get("metadata"))).encode()

    def _get_openai(self, headers: dict[str, str], raw: bytes, id: str) -> tuple[int, bytes]:
        batch = self._poll(id, OPENAI)
        return 200, json.dumps(self._openai_json(batch)).encode()

    def _file_content(self, headers: dict[str, str], raw: bytes, id: str) -> tuple[int, bytes]:
        data = self.files.get(id)
        if data is None:
            raise FakeBatchError(404, "no such file")
        return 200, data

    def _openai_json(self, batch: FakeBatch, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        status = (
            ("expired" if batch.expired else "completed")
            if batch.ended
            else ("validating" if batch.polls == 0 else "in_progress")
        )
        counts = batch.counts or {"completed": 0, "failed": 0}
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": OPENAI_CHAT,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_at),
            "in_progress_at": int(batch.created_at),
            "expires_at": int(batch.created_at) + 86400,
            "completed_at": int(time.time()) if batch.ended and not batch.expired else None,
            "expired_at": int(time.time()) if batch.expired else None,
            "request_counts": {"total": len(batch.entries), **counts},
            "metadata": metadata,
        }

    # -- Anthropic ------------------------------------------------------------------------------------

    def _create_anthropic(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        max_requests, max_bytes = self.limits[ANTHROPIC]
        if len(raw) > max_bytes:
            raise FakeBatchError(413, f"body of {len(raw)} bytes exceeds {max_bytes}")
        requests = json.loads(raw).get("requests") or []
        if not requests or len(requests) > max_requests:
            raise FakeBatchError(400, f"{len(requests)} requests (1 to {max_requests} allowed)")
        seen: set[str] = set()
        for index, entry in enumerate(requests):
            cid, params = entry.get("custom_id", ""), entry.get("params") or {}
            if not ANTHROPIC_CUSTOM_ID.match(cid) or cid in seen:
                raise FakeBatchError(400, f"requests.{index}.custom_id {cid!r} is invalid or repeated")
            seen.add(cid)
            if not params.get("model") or not params.get("max_tokens") or not params.get("messages"):
                raise FakeBatchError(400, f"requests.{index}.params needs model, max_tokens and messages")
        batch = FakeBatch(
            id=f"msgbatch_{uuid.uuid4().hex[:24]}",
            provider=ANTHROPIC,
            entries=requests,
            headers=headers,
            expire_after=self._next_expiry(),
        )
        with self._batch_lock:
            self.batches[batch.id] = batch
        return 200, json.dumps(self._anthropic_json(batch)).encode()

    def _get_anthropic(self, headers: dict[str, str], raw: bytes, id: str) -> tuple[int, bytes]:
        batch = self._poll(id, ANTHROPIC)
        return 200, json.dumps(self._anthropic_json(batch)).encode()

    def _anthropic_results(self, headers: dict[str, str], raw: bytes, id: str) -> tuple[int, bytes]:
        batch = self.batches.get(id)
        if batch is None or not batch.ended:
            raise FakeBatchError(404, "results are not available")
        lines = list(batch.results)
        self.rng.shuffle(lines)  # "not guaranteed to be in the same order as requests"
        return 200, b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    def _anthropic_json(self, batch: FakeBatch) -> dict[str, Any]:
        def stamp(seconds: float) -> str:
            return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")

        counts = {
            "processing": 0 if batch.ended else len(batch.entries),
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
            **batch.counts,
        }
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if batch.ended else "in_progress",
            "request_counts": counts,
            "created_at": stamp(batch.created_at),
            "expires_at": stamp(batch.created_at + 86400),
            "ended_at": stamp(time.time()) if batch.ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch.id}/results" if batch.ended else None,
        }

    # -- processing -----------------------------------------------------------------------------------

    def _next_expiry(self) -> int | None:
        with self._batch_lock:
            return self.expire_plan.pop(0) if self.expire_plan else None

    def _poll(self, batch_id: str, provider: str) -> FakeBatch:
        with self._batch_lock:
            batch = self.batches.get(batch_id)
            if batch is None or batch.provider != provider:
                raise FakeBatchError(404, f"no batch {batch_id}")
            batch.polls += 1
            due = not batch.ended and provider not in self.hold and batch.polls >= self.polls_until_done
        if due:
            self._finish(batch)
        return batch

    def _finish(self, batch: FakeBatch) -> None:
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        counts = (
            {"completed": 0, "failed": 0}
            if batch.provider == OPENAI
            else {"succeeded": 0, "errored": 0, "expired": 0, "canceled": 0}
        )
        for index, entry in enumerate(batch.entries):
            cid = entry["custom_id"]
            request = batch.request(entry)
            if batch.expire_after is not None and index >= batch.expire_after:
                if batch.provider == OPENAI:
                    errors.append(
                        {
                            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                            "custom_id": cid,
                            "response": None,
                            "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE},
                        }
                    )
                    counts["failed"] += 1
                else:
                    output.append({"custom_id": cid, "result": {"type": "expired"}})
                    counts["expired"] += 1
                continue
            failure = self.request_error(request) if self.request_error else None
            if failure is None:
                try:
                    answer = self._answer_one(request)
                except Exception as exc:  # a responder bug becomes a 500 for that request, as live
                    with self._lock:
                        self._errors.append(exc)
                    failure = (500, f"responder failed: {exc!r}")
            if failure is not None:
                status, message = failure
                if batch.provider == OPENAI:
                    errors.append(
                        {
                            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                            "custom_id": cid,
                            "error": None,
                            "response": {
                                "status_code": status,
                                "request_id": f"req_{uuid.uuid4().hex[:24]}",
                                "body": error_body(OPENAI, status, message=message),
                            },
                        }
                    )
                    counts["failed"] += 1
                else:
                    output.append(
                        {
                            "custom_id": cid,
                            "result": {"type": "errored", "error": error_body(ANTHROPIC, status, message=message)},
                        }
                    )
                    counts["errored"] += 1
                continue
            if batch.provider == OPENAI:
                output.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                        "custom_id": cid,
                        "error": None,
                        "response": {"status_code": 200, "request_id": f"req_{uuid.uuid4().hex[:24]}", "body": answer},
                    }
                )
                counts["completed"] += 1
            else:
                output.append({"custom_id": cid, "result": {"type": "succeeded", "message": answer}})
                counts["succeeded"] += 1
        with self._batch_lock:
            if batch.provider == OPENAI:
                for kind, lines in (("output_file_id", output), ("error_file_id", errors)):
                    if lines:
                        file_id = f"file-{uuid.uuid4().hex[:24]}"
                        self.files[file_id] = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
                        setattr(batch, kind, file_id)
            else:
                batch.results = output
            batch.counts = counts
            batch.expired = batch.expire_after is not None and batch.expire_after < len(batch.entries)
            batch.ended = True

    def _answer_one(self, request: FakeRequest) -> dict[str, Any]:
        produced = (self.responder or default_responder)(request)
        if produced is None:
            produced = default_responder(request)
        reply = self._to_reply(request, produced)
        render = self._render_openai if request.provider == OPENAI else self._render_anthropic
        return render(request, reply)
