"""The local model server's own process: runs INSIDE the local model venv, not in prelabel's interpreter.

Self-contained: LocalModelServer starts this file by its path in the venv's Python,
``python serve_in_venv.py serve <llama_cpp.server arguments>`` (see :func:`command`), and prelabel is not
installed there. So this module imports only the standard library and what that venv has (llama_cpp), never
``prelabel.*`` nor its sibling modules. Imported from prelabel's side, it loads the standard library only.

It runs ``llama_cpp.server`` unchanged behind a small request rewrite (:func:`rewrite_chat_request`), and exits
when the process that started it is gone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SERVE = "serve"  # the command word this script expects before llama_cpp.server's arguments
# Set by the starting process: its pid (this server exits when that process is gone), and "0" to serve without
# the request rewrite.
PARENT_PID_ENV = "PRELABEL_PARENT_PID"
JSON_SCHEMA_SHIM_ENV = "PRELABEL_JSON_SCHEMA_SHIM"


def command(python: Path | str, args: Sequence[str]) -> list[str]:
    """The command line that runs this file in ``python`` (the local venv's) with llama_cpp.server's ``args``."""
    return [str(python), str(Path(__file__).resolve()), SERVE, *args]


def rewrite_chat_request(body: bytes) -> bytes:
    """Turn OpenAI request fields llama-cpp-python 0.3.x lacks into the ones it has."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    changed = False
    response_format = data.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        data["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
        changed = True
    if "max_completion_tokens" in data:
        value = data.pop("max_completion_tokens")
        if data.get("max_tokens") is None:
            data["max_tokens"] = value
        changed = True
    return json.dumps(data).encode() if changed else body


def _shim(app: Any) -> Any:
    """ASGI wrapper applying :func:`rewrite_chat_request` to POST .../chat/completions."""

    async def wrapped(scope: dict, receive: Callable, send: Callable) -> None:
        if (
            scope.get("type") != "http"
            or scope.get("method") != "POST"
            or not scope.get("path", "").endswith("/chat/completions")
        ):
            await app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await app(scope, receive, send)  # client went away: let the app see it
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = rewrite_chat_request(b"".join(chunks))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(dict(scope, headers=headers), replay, send)

    return wrapped


def _watch_parent() -> None:
    """Exit when the process that started us is gone (no orphans after a crash or SIGKILL)."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected:
        return

    def loop() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != int(expected):
                os._exit(0)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


def _serve(argv: list[str]) -> None:
    _watch_parent()
    # llama_cpp is installed in the local venv only, where this runs; mypy checks prelabel's own environment.
    if os.environ.get(JSON_SCHEMA_SHIM_ENV, "1") == "1":
        import llama_cpp.server.app as server_app  # type: ignore[import-not-found]

        original = server_app.create_app
        server_app.create_app = lambda *a, **k: _shim(original(*a, **k))  # before __main__ binds it
    import llama_cpp.server.__main__ as server_main  # type: ignore[import-not-found]

    sys.argv = ["llama_cpp.server", *argv]
    server_main.main()


if __name__ == "__main__":
    # Run by its path, Python put this folder first on sys.path; it holds prelabel's modules (models, paths,
    # server, ...), which are not for this interpreter and must not shadow any module of the venv.
    _here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [entry for entry in sys.path if not entry or os.path.realpath(entry) != _here]
    if len(sys.argv) >= 2 and sys.argv[1] == SERVE:
        _serve(sys.argv[2:])
    else:
        print(f"usage: python {os.path.basename(__file__)} {SERVE} <llama_cpp.server arguments>", file=sys.stderr)
        sys.exit(2)
