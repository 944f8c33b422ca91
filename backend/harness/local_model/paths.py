"""Where the local model's files live: prelabel's cache folder (the llama-cpp-python wheel, reassembled models,
the build log, the install lock) and the local model venv. The folders come from prelabel's Settings, read on
every call."""

from __future__ import annotations

import os
from pathlib import Path

from prelabel.settings import Settings


def cache_dir() -> Path:
    """prelabel's cache folder: the PRELABEL_CACHE_DIR setting, else $XDG_CACHE_HOME/prelabel, else
    ~/.cache/prelabel."""
    explicit = Settings().prelabel_cache_dir
    if explicit is not None:
        return explicit.expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "prelabel"


def wheel_cache_dir() -> Path:
    """Where the built llama-cpp-python wheel is kept."""
    return cache_dir() / "wheels"


def model_cache_dir() -> Path:
    """Where chunked models are reassembled."""
    return cache_dir() / "models"


def build_log_path() -> Path:
    """The full log of the last llama-cpp-python build."""
    return cache_dir() / "llama_build.log"


def install_lock_path() -> Path:
    """The file lock that serialises installs of the local model runtime across processes."""
    return cache_dir() / "localmodel.lock"


def default_venv_dir() -> Path:
    """The local model venv: the PRELABEL_LOCAL_VENV setting, by default .venv-localmodel in the working folder
    (the Makefile sets it to the checkout's)."""
    return Settings().prelabel_local_venv.expanduser().resolve()


def venv_python(venv_dir: Path | None = None) -> Path:
    venv_dir = Path(venv_dir) if venv_dir else default_venv_dir()
    if os.name == "nt":  # pragma: no cover - prelabel's machines are Linux
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def site_packages(venv_dir: Path) -> list[Path]:
    """The venv's site-packages folders."""
    found = sorted(venv_dir.glob("lib/python3*/site-packages")) + sorted(venv_dir.glob("lib64/python3*/site-packages"))
    if (venv_dir / "Lib" / "site-packages").is_dir():  # pragma: no cover - Windows layout
        found.append(venv_dir / "Lib" / "site-packages")
    return found
