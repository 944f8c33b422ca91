"""The local model server: :class:`LocalModelServer` runs :mod:`.serve_in_venv` by its file path in the local
venv's interpreter on a free loopback port, waits until it answers, and stops its whole process group."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prelabel.harness.local_model import serve_in_venv
from prelabel.harness.local_model.errors import LocalModelError
from prelabel.harness.local_model.paths import venv_python

# Variables that llama_cpp.server reads (HOST and PORT even override the command line, API_KEY would
# turn on authentication): never pass them on from prelabel's environment.
_SERVER_ENV = {
    "HOST",
    "PORT",
    "CONFIG_FILE",
    "API_KEY",
    "MODEL",
    "MODEL_ALIAS",
    "CHAT_FORMAT",
    "N_CTX",
    "N_BATCH",
    "N_UBATCH",
    "N_THREADS",
    "N_THREADS_BATCH",
    "N_GPU_LAYERS",
    "LOGITS_ALL",
    "VERBOSE",
    "SEED",
    "EMBEDDING",
    "INTERRUPT_REQUESTS",
    "ROOT_PATH",
    "SSL_KEYFILE",
    "SSL_CERTFILE",
    "CACHE",
    "CACHE_TYPE",
    "CACHE_SIZE",
    "HF_MODEL_REPO_ID",
    "HF_PRETRAINED_MODEL_NAME_OR_PATH",
    "CLIP_MODEL_PATH",
    "LORA_BASE",
    "LORA_PATH",
    "DISABLE_PING_EVENTS",
    "USE_MMAP",
    "USE_MLOCK",
    "DRAFT_MODEL",
    "DRAFT_MODEL_NUM_PRED_TOKENS",
}

_RUNNING: set[LocalModelServer] = set()


@atexit.register
def _stop_all() -> None:  # no orphaned servers when prelabel exits
    for server in list(_RUNNING):
        server.stop()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ModelSpec:
    """One model of a multi-model server (see :meth:`LocalModelServer.start_many`)."""

    model_path: Path | str
    alias: str | None = None
    n_ctx: int = 2048
    logprobs: bool = True
    n_threads: int | None = None
    chat_format: str | None = None

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": str(self.model_path),
            "model_alias": self.alias or Path(self.model_path).stem,
            "n_ctx": self.n_ctx,
            "logits_all": self.logprobs,
        }
        if self.n_threads:
            out["n_threads"] = self.n_threads
        if self.chat_format:
            out["chat_format"] = self.chat_format
        return out


class LocalModelServer:
    """llama-cpp-python's OpenAI-compatible server as a child process.

    >>> python = ensure_local_runtime()
    >>> with LocalModelServer(python).start(find_model_file(), alias="smollm2-135m-instruct") as server:
    ...     client = openai.OpenAI(base_url=server.base_url, api_key="local")
    ...     client.chat.completions.create(model=server.model_name, messages=[...])

    The server handles one request at a time (others queue). ``logprobs=True`` (the server's
    default) keeps logits for every token so that ``logprobs``/``top_logprobs`` work; that costs
    n_ctx x vocabulary floats of memory and makes each call slower (2x for SmolLM2, ~3x for Qwen's
    152k vocabulary): turn it off for an annotator that does not need them.
    """

    def __init__(
        self,
        python: Path | str | None = None,
        *,
        log_path: Path | str | None = None,
        startup_timeout: float = 180.0,
        json_schema_shim: bool = True,
    ) -> None:
        self.python = Path(python) if python else venv_python()
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.json_schema_shim = json_schema_shim
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.model_names: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._config_path: Path | None = None

    # -- starting ----------------------------------------------------------------------------------

    def start(
        self,
        model_path: Path | str,
        port: int = 0,
        host: str = "127.0.0.1",
        n_ctx: int = 2048,
        *,
        alias: str | None = None,
        logprobs: bool = True,
        n_threads: int | None = None,
        chat_format: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> LocalModelServer:
        """Serve one GGUF model; return self once GET /v1/models answers."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise LocalModelError(f"model file not found: {model_path}")
        spec = ModelSpec(model_path, alias, n_ctx, logprobs, n_threads, chat_format)
        settings = spec.settings()
        args = [
            "--model",
            settings["model"],
            "--model_alias",
            settings["model_alias"],
            "--n_ctx",
            str(n_ctx),
            "--logits_all",
            "true" if logprobs else "false",
        ]
        if n_threads:
            args += ["--n_threads", str(n_threads)]
        if chat_format:
            args += ["--chat_format", chat_format]
        return self._launch(lambda p: args + ["--host", host, "--port", str(p), *extra_args], port, host)

    def start_many(
        self, models: Sequence[ModelSpec | Mapping[str, Any]], port: int = 0, host: str = "127.0.0.1"
    ) -> LocalModelServer:
        """Serve several models from one process through llama_cpp.server's ``--config_file``.

        Requests pick a model by its alias (an unknown name silently gets the first model). The
        server keeps ONE model in memory: a request for another alias unloads the current model and
        loads the other, so alternating annotator and judge calls pays a reload each time. Two
        servers (two :class:`LocalModelServer`) avoid that at the cost of memory.
        """
        specs = [m if isinstance(m, ModelSpec) else ModelSpec(**m) for m in models]
        if not specs:
            raise LocalModelError("start_many needs at least one model")
        for spec in specs:
            if not Path(spec.model_path).is_file():
                raise LocalModelError(f"model file not found: {spec.model_path}")
        aliases = [spec.settings()["model_alias"] for spec in specs]
        if len(set(aliases)) != len(aliases):
            raise LocalModelError(f"model aliases must differ: {aliases}")
        fd, name = tempfile.mkstemp(prefix="prelabel-llama-", suffix=".json")
        os.close(fd)
        self._config_path = Path(name)

        def args(p: int) -> list[str]:
            config = {"host": host, "port": p, "models": [spec.settings() for spec in specs]}
            self._config_path.write_text(json.dumps(config, indent=2))  # type: ignore[union-attr]
            return ["--config_file", str(self._config_path)]

        return self._launch(args, port, host)

    def _launch(self, make_args: Callable[[int], list[str]], port: int, host: str) -> LocalModelServer:
        if self._proc is not None:
            raise LocalModelError("this server is already running; stop() it first")
        if not self.python.exists():
            raise LocalModelError(f"{self.python} does not exist: call ensure_local_runtime() first")
        if port and not _port_free(host, port):
            raise LocalModelError(f"port {port} on {host} is already in use: pick another or pass port=0")
        attempts = 1 if port else 3
        for attempt in range(attempts):
            chosen = port or _free_port(host)
            try:
                self._spawn(make_args(chosen), host, chosen)
                self._wait_ready()
                return self
            except LocalModelError as error:
                in_use = "address already in use" in str(error).lower()
                self.stop()
                if not (in_use and attempt + 1 < attempts):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, args: list[str], host: str, port: int) -> None:
        self.host, self.port = host, port
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"llama-server-{port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k.upper() not in _SERVER_ENV}
        env[serve_in_venv.PARENT_PID_ENV] = str(os.getpid())
        env[serve_in_venv.JSON_SCHEMA_SHIM_ENV] = "1" if self.json_schema_shim else "0"
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = serve_in_venv.command(self.python, args)
        self._proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )  # its own process group, for stop()
        _RUNNING.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{self._url_host}:{self.port}/v1/models"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise LocalModelError(
                    f"the local model server exited with code {code} before it was ready:\n{self.log_tail()}"
                )
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        data = json.loads(response.read())
                        self.model_names = [m["id"] for m in data.get("data", [])]
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise LocalModelError(
                    f"the local model server did not answer {url} within "
                    f"{self.startup_timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    # -- using -------------------------------------------------------------------------------------

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in /v1."""
        if self.port is None:
            raise LocalModelError("the server is not started")
        return f"http://{self._url_host}:{self.port}/v1"

    @property
    def model_name(self) -> str:
        """The (first) model alias the server reports on /v1/models: pass it as ``model=``."""
        if not self.model_names:
            raise LocalModelError("the server is not started")
        return self.model_names[0]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (Linux), model weights included."""
        if not self.running:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # -- stopping ----------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server's whole process group (TERM, then KILL after ``timeout`` seconds)."""
        proc, self._proc = self._proc, None
        _RUNNING.discard(self)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._config_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._config_path.unlink()
            self._config_path = None

    def __enter__(self) -> LocalModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.stop()
