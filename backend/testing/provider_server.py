"""A fake OpenAI / Anthropic HTTP provider on 127.0.0.1 for driving the real SDKs in tests."""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

OPENAI = "openai"
ANTHROPIC = "anthropic"

TIMEOUT = "timeout"
MALFORMED = "malformed"

MALFORMED_BODY = b'{"id": "broken", "choices": [{"message": {"content": "unterminated'


class FakeTool(NamedTuple):
    """The tool a request asks the model to call."""

    name: str
    input_schema: dict[str, Any]


@dataclass
class FakeToken:
    """One generated token with its log-probability and the alternatives at that position."""

    token: str
    top_logprobs: list[tuple[str, float]] = field(default_factory=list)
    logprob: float | None = None


TokenSpec = FakeToken | Sequence[Any] | Mapping[str, Any]


@dataclass
class FakeReply:
    """What the fake provider answers; every field is optional."""

    content: str | None = None
    tool_input: dict[str, Any] | None = None
    logprobs: Sequence[TokenSpec] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: str | bytes | None = None
    finish_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    model: str | None = None


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        if isinstance(content.get("text"), str):
            return content["text"]
        if "content" in content:
            return _text_of(content["content"])
        return ""
    if isinstance(content, Sequence):
        return "\n".join(t for t in (_text_of(part) for part in content) if t)
    return ""


@dataclass
class FakeRequest:
    """A parsed provider call handed to the responder."""

    provider: str
    path: str
    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def system_text(self) -> str:
        """Text of the system prompt (Anthropic `system`, OpenAI system/developer messages)."""
        parts = [_text_of(self.body.get("system"))] if self.provider == ANTHROPIC else []
        parts += [_text_of(m.get("content")) for m in self.messages if m.get("role") in ("system", "developer")]
        return "\n".join(p for p in parts if p)

    @property
    def user_text(self) -> str:
        """Text of all user messages."""
        return "\n".join(t for t in (_text_of(m.get("content")) for m in self.messages if m.get("role") == "user") if t)

    @property
    def prompt_text(self) -> str:
        """Concatenated text of all system and user messages."""
        return "\n".join(t for t in (self.system_text, self.user_text) if t)

    @property
    def wants_json(self) -> bool:
        """True when the request asks for JSON output (json_object or a JSON schema)."""
        fmt = self.body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
            return True
        return self.wants_json_schema is not None

    @property
    def wants_json_schema(self) -> dict[str, Any] | None:
        """The requested JSON schema (OpenAI response_format, Anthropic output_config.format), or None."""
        fmt = self.body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            return dict(spec.get("schema") or {})
        for fmt in ((self.body.get("output_config") or {}).get("format"), self.body.get("output_format")):
            if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
                return dict(fmt.get("schema") or {})
        return None

    @property
    def tool(self) -> FakeTool | None:
        """The forced tool (named tool_choice, or the first tool under any/required/auto), or None."""
        tools = [t for t in self.body.get("tools") or [] if isinstance(t, Mapping)]
        choice = self.body.get("tool_choice")
        if not tools or choice == "none" or (isinstance(choice, Mapping) and choice.get("type") == "none"):
            return None
        specs = [self._tool_spec(t) for t in tools]
        wanted: str | None = None
        if isinstance(choice, Mapping):
            wanted = choice.get("name") or (choice.get("function") or {}).get("name")
        for spec in specs:
            if wanted is None or spec.name == wanted:
                return spec
        return None

    def _tool_spec(self, tool: Mapping[str, Any]) -> FakeTool:
        if self.provider == OPENAI:
            fn = tool.get("function") or {}
            return FakeTool(str(fn.get("name", "")), dict(fn.get("parameters") or {}))
        return FakeTool(str(tool.get("name", "")), dict(tool.get("input_schema") or {}))

    @property
    def wants_logprobs(self) -> bool:
        """True when an OpenAI request asks for token log-probabilities."""
        return self.provider == OPENAI and bool(self.body.get("logprobs"))

    @property
    def top_logprobs(self) -> int | None:
        """The requested number of alternatives per token, or None."""
        value = self.body.get("top_logprobs")
        return int(value) if isinstance(value, int) else None

    @property
    def api_key(self) -> str | None:
        """The key sent as `Authorization: Bearer` or `x-api-key`."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return self.headers.get("x-api-key")


@dataclass
class RecordedRequest:
    """One call as seen by the fake provider."""

    timestamp: float
    monotonic: float
    provider: str
    path: str
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    status: int | None = None
    fault: str | None = None


@dataclass
class _Fault:
    kind: str
    status: int = 500
    retry_after: str | None = None
    retry_after_ms: str | None = None
    only: str | None = None
    echo_key: bool = False


Responder = Callable[[FakeRequest], FakeReply | str | dict | None]


def sample_from_schema(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """A minimal instance that satisfies a JSON schema (first enum value, required fields filled)."""
    root = schema if root is None else root
    if "$ref" in schema:
        node: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            node = node.get(part, {}) if part else node
        return sample_from_schema(node, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return sample_from_schema(options[0], root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            merged.update(sub)
        return sample_from_schema(merged, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return {name: sample_from_schema(sub, root) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [sample_from_schema(schema.get("items") or {}, root) for _ in range(count)]
    if kind == "string":
        return "fake" + "x" * max(0, int(schema.get("minLength", 0)) - 4)
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "fake"


def default_responder(request: FakeRequest) -> FakeReply | str | dict:
    """Schema-valid tool input or JSON when asked, otherwise a short fixed text."""
    tool = request.tool
    if tool is not None:
        return sample_from_schema(tool.input_schema)
    schema = request.wants_json_schema
    if schema is not None:
        return FakeReply(content=json.dumps(sample_from_schema(schema)))
    if request.wants_json:
        return FakeReply(content="{}")
    return f"fake {request.provider} reply"


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _normalize_token(spec: TokenSpec) -> FakeToken:
    if isinstance(spec, FakeToken):
        return spec
    if isinstance(spec, Mapping):
        tops = [
            (str(t["token"]), float(t["logprob"])) if isinstance(t, Mapping) else (str(t[0]), float(t[1]))
            for t in spec.get("top_logprobs") or []
        ]
        return FakeToken(str(spec["token"]), tops, spec.get("logprob"))
    token, rest = spec[0], list(spec[1:])
    logprob = float(rest.pop(0)) if rest and isinstance(rest[0], (int, float)) else None
    tops = [(str(t[0]), float(t[1])) for t in (rest[0] if rest else [])]
    return FakeToken(str(token), tops, logprob)


def render_logprobs(tokens: Sequence[TokenSpec], top_n: int | None) -> dict[str, Any]:
    """OpenAI `choices[0].logprobs` with `top_n` alternatives per token."""
    content = []
    for spec in tokens:
        tok = _normalize_token(spec)
        own = tok.logprob
        if own is None:
            own = next((lp for t, lp in tok.top_logprobs if t == tok.token), None)
        if own is None:
            own = tok.top_logprobs[0][1] if tok.top_logprobs else 0.0
        tops = tok.top_logprobs[: top_n or 0]
        entry = _token_entry(tok.token, own)
        entry["top_logprobs"] = [_token_entry(t, lp) for t, lp in tops]
        content.append(entry)
    return {"content": content, "refusal": None}


def tokens_for_text(text: str, top_n: int | None) -> list[FakeToken]:
    """Confident per-token log-probabilities for a text, with unlikely fillers as alternatives."""
    out = []
    for piece in _TOKEN_RE.findall(text):
        tops = [(piece, -0.001)] + [(f"<alt{i}>", -10.0 - i) for i in range(1, max(1, top_n or 1))]
        out.append(FakeToken(piece, tops, -0.001))
    return out


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("server_error", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    408: ("timeout_error", "Request timed out."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error."),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(provider: str, status: int, error_type: str | None = None, message: str | None = None) -> dict:
    """The provider's documented error JSON for a status code."""
    if provider == ANTHROPIC:
        etype, emsg = _ANTHROPIC_ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}.")
        )
        return {
            "type": "error",
            "error": {"type": error_type or etype, "message": message or emsg},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }
    otype, code, omsg = _OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}.")
    )
    return {"error": {"message": message or omsg, "type": error_type or otype, "param": None, "code": code}}


def echoed_credentials(headers: Mapping[str, str]) -> str:
    """An error message quoting a request's credentials the ways providers and gateways have been seen to."""
    key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
    return (
        f"Incorrect API key provided: {key}. Received headers: "
        f"authorization={headers.get('authorization', '')!r}, x-api-key={headers.get('x-api-key', '')!r}; "
        + json.dumps({"api_key": key})
    )


def to_reply(request: FakeRequest, produced: FakeReply | str | dict) -> FakeReply:
    """A responder's answer (FakeReply, text, or a dict for tool input / JSON) as a FakeReply."""
    if isinstance(produced, FakeReply):
        return produced
    if isinstance(produced, str):
        return FakeReply(content=produced)
    if isinstance(produced, dict):
        if request.tool is not None:
            return FakeReply(tool_input=produced)
        return FakeReply(content=json.dumps(produced))
    raise TypeError(f"responder returned {type(produced).__name__}, expected FakeReply, str or dict")


def render_openai(request: FakeRequest, reply: FakeReply) -> dict[str, Any]:
    """The OpenAI chat.completion JSON of a reply."""
    tool = request.tool
    content = reply.content
    tool_calls = None
    if reply.tool_input is not None:
        if tool is not None:
            tool_calls = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": tool.name, "arguments": json.dumps(reply.tool_input)},
                }
            ]
        elif content is None:
            content = json.dumps(reply.tool_input)
    if content is None and reply.logprobs is not None:
        content = "".join(_normalize_token(t).token for t in reply.logprobs)
    if content is None and tool_calls is None:
        content = ""
    logprobs = None
    if request.wants_logprobs:
        tokens = reply.logprobs if reply.logprobs is not None else tokens_for_text(content or "", request.top_logprobs)
        logprobs = render_logprobs(tokens, request.top_logprobs)
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    finish = reply.finish_reason or ("tool_calls" if tool_calls else "stop")
    n = int(request.body.get("n") or 1)
    choices = [{"index": i, "message": message, "finish_reason": finish, "logprobs": logprobs} for i in range(n)]
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else _count_tokens(request.prompt_text)
    completion_tokens = (
        reply.completion_tokens
        if reply.completion_tokens is not None
        else _count_tokens(content or json.dumps(reply.tool_input or {}))
    )
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or request.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_fake",
        "service_tier": "default",
    }


def render_anthropic(request: FakeRequest, reply: FakeReply) -> dict[str, Any]:
    """The Anthropic message JSON of a reply."""
    tool = request.tool
    blocks: list[dict[str, Any]] = []
    content = reply.content
    if reply.tool_input is not None and tool is None and content is None:
        content = json.dumps(reply.tool_input)
    if content is not None:
        blocks.append({"type": "text", "text": content})
    if reply.tool_input is not None and tool is not None:
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": tool.name,
                "input": reply.tool_input,
            }
        )
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    used_tool = any(b["type"] == "tool_use" for b in blocks)
    input_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else _count_tokens(request.prompt_text)
    output_tokens = (
        reply.completion_tokens
        if reply.completion_tokens is not None
        else _count_tokens(content or json.dumps(reply.tool_input or {}))
    )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": reply.model or request.model,
        "content": blocks,
        "stop_reason": reply.finish_reason or ("tool_use" if used_tool else "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def render_reply(request: FakeRequest, reply: FakeReply) -> dict[str, Any]:
    """The success JSON of a reply in the request's provider shape."""
    return (render_openai if request.provider == OPENAI else render_anthropic)(request, reply)


def count_tokens_body(request: FakeRequest) -> dict[str, Any]:
    """Anthropic's /v1/messages/count_tokens answer."""
    return {"input_tokens": _count_tokens(request.prompt_text)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.opened = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
            self.server.opened += 1

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/models"):
            models = self.server.provider.models
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        elif path in ("", "/health", "/v1/health"):
            self._send(200, b'{"status": "ok"}')
        else:
            self._send(404, json.dumps(error_body(OPENAI, 404, message=f"No route {path}")).encode())

    def do_POST(self) -> None:
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/chat/completions"):
            provider = OPENAI
        elif path.endswith("/messages/count_tokens") or path.endswith("/messages"):
            provider = ANTHROPIC
        else:
            self._send(404, json.dumps(error_body(OPENAI, 404, message=f"No route {path}")).encode())
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            self._send(400, json.dumps(error_body(provider, 400, message=f"Invalid JSON body: {exc}")).encode())
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, extra = self.server.provider._handle(provider, path, body, headers)
        self._send(status, payload, extra)


class FakeProvider:
    """A threaded fake of the OpenAI chat completions and Anthropic messages APIs on 127.0.0.1."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        seed: int = 0,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.responder: Responder | None = responder
        self.latency = latency
        self.fault_rate = fault_rate
        self.fault_kinds: tuple[int | str, ...] = (429, 500, 529, TIMEOUT, MALFORMED)
        self.timeout_delay = 2.0
        self.retry_after: str | None = "0"
        self.retry_after_ms: str | None = None
        self.api_key = api_key
        self.models: list[str] = ["fake-model"]
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._scripted: list[FakeReply | str | dict] = []
        self._errors: list[BaseException] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeProvider:
        """Bind a free port and serve in a daemon thread."""
        if self._server is None:
            self._stop.clear()
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-provider", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake delayed handlers and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        with server.connections_lock:
            conns = list(server.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Root URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL (…/v1)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic base URL (the SDK appends /v1/messages)."""
        return self.url

    def env(self, api_key: str = "fake-key") -> dict[str, str]:
        """Environment variables that point both SDKs at this server."""
        return {
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": api_key,
            "ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "ANTHROPIC_API_KEY": api_key,
        }

    def fail_next(
        self,
        n: int = 1,
        status: int | str = 429,
        retry_after: str | None = "0",
        *,
        retry_after_ms: str | None = None,
        provider: str | None = None,
        echo_key: bool = False,
    ) -> None:
        """Fail the next n calls (optionally only for one provider) with a status code, "timeout" or "malformed".
        With `echo_key`, the error body quotes the credentials the call was sent with, as a careless gateway
        or a verbose 401 does."""
        kind = status if isinstance(status, str) else "status"
        code = status if isinstance(status, int) else 200
        with self._lock:
            self._faults.extend(_Fault(kind, code, retry_after, retry_after_ms, provider, echo_key) for _ in range(n))

    def queue_replies(self, *replies: FakeReply | str | dict) -> None:
        """Answer the next calls with these replies, in order, before the responder is consulted."""
        with self._lock:
            self._scripted.extend(replies)

    def reset(self) -> None:
        """Forget recorded requests, pending faults and scripted replies."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._scripted.clear()
            self._errors.clear()
            self._max_in_flight = self._in_flight

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every call received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        """Number of calls received."""
        with self._lock:
            return len(self._requests)

    @property
    def in_flight(self) -> int:
        """Calls being answered right now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Peak number of calls answered at the same time."""
        with self._lock:
            return self._max_in_flight

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far (keep-alive keeps this low)."""
        server = self._server
        if server is None:
            return 0
        with server.connections_lock:
            return server.opened

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by the responder (each answered as a 500)."""
        with self._lock:
            return list(self._errors)

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least n calls have arrived."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout=timeout)

    def _times(self, provider: str | None) -> list[float]:
        return [r.monotonic for r in self.requests if provider is None or r.provider == provider]

    def requests_per_minute(self, provider: str | None = None) -> float:
        """Average request rate between the first and the last call, per minute."""
        times = self._times(provider)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) * 60.0 / (times[-1] - times[0])

    def peak_in_window(self, seconds: float = 60.0, provider: str | None = None) -> int:
        """The largest number of calls that arrived within any window of `seconds`."""
        times = sorted(self._times(provider))
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def _take_fault(self, provider: str) -> _Fault | None:
        for i, fault in enumerate(self._faults):
            if fault.only is None or fault.only == provider:
                return self._faults.pop(i)
        if self.fault_rate > 0 and self.rng.random() < self.fault_rate:
            kind = self.rng.choice(self.fault_kinds)
            if isinstance(kind, int):
                code = 503 if kind == 529 and provider == OPENAI else kind
                return _Fault("status", code, self.retry_after, self.retry_after_ms)
            return _Fault(str(kind))
        return None

    def _handle(
        self, provider: str, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        model = str(body.get("model", ""))
        record = RecordedRequest(time.time(), time.monotonic(), provider, path, model, body, headers)
        with self._cond:
            self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._cond.notify_all()
        try:
            status, payload, extra = self._answer(provider, path, model, body, headers, record)
            record.status = status
            return status, payload, extra
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(
        self,
        provider: str,
        path: str,
        model: str,
        body: dict[str, Any],
        headers: dict[str, str],
        record: RecordedRequest,
    ) -> tuple[int, bytes, dict[str, str]]:
        request = FakeRequest(provider, path, model, list(body.get("messages") or []), body, headers)
        id_header = {"request-id" if provider == ANTHROPIC else "x-request-id": f"req_{uuid.uuid4().hex[:24]}"}
        key = request.api_key
        if not key or (self.api_key is not None and key != self.api_key):
            self._sleep(self.latency)
            return 401, json.dumps(error_body(provider, 401)).encode(), id_header

        with self._lock:
            fault = self._take_fault(provider)
            scripted = self._scripted.pop(0) if fault is None and self._scripted else None
        if fault is not None:
            record.fault = fault.kind if fault.kind != "status" else str(fault.status)
            if fault.kind == MALFORMED:
                self._sleep(self.latency)
                return 200, MALFORMED_BODY, id_header
            if fault.kind == "status":
                self._sleep(self.latency)
                extra = dict(id_header)
                if fault.retry_after is not None:
                    extra["retry-after"] = fault.retry_after
                if fault.retry_after_ms is not None:
                    extra["retry-after-ms"] = fault.retry_after_ms
                message = echoed_credentials(headers) if fault.echo_key else None
                return fault.status, json.dumps(error_body(provider, fault.status, message=message)).encode(), extra
            self._sleep(self.timeout_delay)

        if path.endswith("/count_tokens"):
            self._sleep(self.latency)
            return 200, json.dumps(count_tokens_body(request)).encode(), id_header

        try:
            produced = scripted if scripted is not None else (self.responder or default_responder)(request)
            if produced is None:
                produced = default_responder(request)
            reply = self._to_reply(request, produced)
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            self._sleep(self.latency)
            return 500, json.dumps(error_body(provider, 500, message=f"responder failed: {exc!r}")).encode(), id_header

        self._sleep(self.latency + reply.delay)
        extra = {**id_header, **reply.headers}
        if reply.raw is not None:
            raw = reply.raw.encode() if isinstance(reply.raw, str) else reply.raw
            return reply.status, raw, extra
        if reply.status >= 400:
            payload = error_body(provider, reply.status, reply.error_type, reply.error_message)
            return reply.status, json.dumps(payload).encode(), extra
        render = self._render_openai if provider == OPENAI else self._render_anthropic
        return reply.status, json.dumps(render(request, reply)).encode(), extra

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    # One owner for the response shapes: the module functions, shared with the asyncio fake (async_provider).
    _to_reply = staticmethod(to_reply)
    _render_openai = staticmethod(render_openai)
    _render_anthropic = staticmethod(render_anthropic)
