"""docker-compose.yml and backend/Dockerfile checked against the settings the code reads, so they cannot
drift apart (no Docker engine runs where the tests run)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from prelabel.harness.labelstudio_server import BACKEND_FRIENDLY_ENV, LS_VERSION
from prelabel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "backend" / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETTINGS_NAMES = {field.alias for field in Settings.model_fields.values()}
# Read by the Dockerfile's `prelabel serve` command rather than by Settings.
DOCKERFILE_NAMES = {"PORT", "WORKERS", "THREADS"}
CONTRACT = {
    "PRELABEL_ANNOTATOR",
    "PRELABEL_JUDGE",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "LABEL_STUDIO_URL",
    "LABEL_STUDIO_API_KEY",
    "BASIC_AUTH_USER",
    "BASIC_AUTH_PASS",
    "MODEL_DIR",
}


def click_command(name: str) -> Any:
    from typer.main import get_command

    from prelabel.scripts.cli import app

    return get_command(app).commands[name]  # type: ignore[attr-defined]


def default(value: str) -> str:
    """The default of a ${VAR:-default} value, or the value itself."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
    return match.group(1) if match else str(value)


def test_services_and_ports():
    services = COMPOSE["services"]
    assert set(services) == {"label-studio", "prelabel"}
    assert services["label-studio"]["image"] == f"heartexlabs/label-studio:{LS_VERSION}"
    assert services["label-studio"]["ports"] == ["8080:8080"]
    assert services["prelabel"]["ports"] == ["9090:9090"]
    assert "EXPOSE 9090" in DOCKERFILE and "PORT=9090" in DOCKERFILE
    assert services["prelabel"]["build"]["dockerfile"] == "backend/Dockerfile"
    # The Dockerfile's COPY paths are relative to the repository root.
    assert services["prelabel"]["build"]["context"] == "."


def test_backend_environment_is_what_the_code_reads():
    env = COMPOSE["services"]["prelabel"]["environment"]
    unknown = set(env) - SETTINGS_NAMES - DOCKERFILE_NAMES
    assert not unknown, f"compose sets variables nothing reads: {unknown}"
    assert CONTRACT <= set(env), f"compose lacks {CONTRACT - set(env)}"
    assert CONTRACT <= SETTINGS_NAMES
    # Inside the compose network Label Studio is reached by its service name.
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    # Keys pass through from the host, never written into the file.
    assert env["OPENAI_API_KEY"] == "${OPENAI_API_KEY:-}" and env["ANTHROPIC_API_KEY"] == "${ANTHROPIC_API_KEY:-}"
    # MODEL_DIR sits on the volume, so the cache and corrections survive a restart.
    volume = COMPOSE["services"]["prelabel"]["volumes"][0]
    assert volume.split(":", 1)[1] == env["MODEL_DIR"]
    # The image runs the same command as a user does, with every option that command takes.
    command = re.search(r"^CMD exec prelabel serve (.*)$", DOCKERFILE, re.MULTILINE)
    assert command, "the image must run `prelabel serve`"
    options = set(re.findall(r"--([a-z-]+)", command.group(1)))
    served = {param.name.replace("_", "-") for param in click_command("serve").params if param.name != "help"}
    assert options == served, (options, served)
    assert (ROOT / "backend" / "_wsgi.py").exists()


def test_label_studio_environment_lets_the_backend_in():
    ls_env = COMPOSE["services"]["label-studio"]["environment"]
    for name, value in BACKEND_FRIENDLY_ENV.items():
        assert default(ls_env[name]) == value, name
    backend_env = COMPOSE["services"]["prelabel"]["environment"]
    # The backend's token is the one Label Studio creates its user with.
    assert default(ls_env["LABEL_STUDIO_USER_TOKEN"]) == default(backend_env["LABEL_STUDIO_API_KEY"])


def dockerfile_stages() -> list[tuple[str | None, list[str]]]:
    """(stage name, instructions) per FROM, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    stages: list[tuple[str | None, list[str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        start = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?$", line, re.IGNORECASE)
        if start:
            stages.append((start.group(1), []))
        else:
            assert stages, f"instruction before the first FROM: {line}"
            stages[-1][1].append(line)
    return stages


def copies(instructions: list[str]) -> list[tuple[str | None, list[str], str]]:
    """(--from stage, sources, destination) of each COPY/ADD."""
    found = []
    for line in instructions:
        words = line.split()
        if words[0].upper() not in ("COPY", "ADD"):
            continue
        options = [w for w in words[1:] if w.startswith("--")]
        paths = [w for w in words[1:] if not w.startswith("--")]
        source_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
        found.append((source_stage, paths[:-1], paths[-1]))
    return found


def test_image_installs_the_built_wheel_and_no_source_tree():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a build stage makes the wheel, the final stage installs it"
    *builders, (_, final) = stages
    builder_names = {name for name, _ in builders}
    build_steps = [line for _, lines in builders for line in lines if line.upper().startswith("RUN")]
    assert any(re.search(r"pip wheel\b.*--no-deps|-m build\b", line) for line in build_steps), build_steps
    # The build stage copies what the build reads: pyproject, its readme and every package-dir folder.
    built_from = {source.rstrip("/") for _, lines in builders for _, sources, _ in copies(lines) for source in sources}
    needed = {
        "pyproject.toml",
        PYPROJECT["project"]["readme"],
        *PYPROJECT["tool"]["setuptools"]["package-dir"].values(),
    }
    assert needed <= built_from, f"the build stage lacks {needed - built_from}"
    # The final stage takes only the build stage's output, never a file of the build context.
    final_copies = copies(final)
    assert final_copies, "the final stage copies the wheel from the build stage"
    for stage, sources, _ in final_copies:
        assert stage in builder_names, f"the final stage copies {sources} from the build context, not a build stage"
    wheel_dirs = [destination.rstrip("/") for _, _, destination in final_copies]
    installs = [line for line in final if line.upper().startswith("RUN") and "pip install" in line]
    assert installs, "the final stage installs the wheel"
    for line in installs:
        targets = [w for w in line.split("&&")[0].split()[3:] if not w.startswith("-")]
        assert targets and all(t.endswith(".whl") for t in targets), (
            f"pip install of something else than a wheel: {line}"
        )
        assert all(any(t.startswith(d + "/") for d in wheel_dirs) for t in targets), (targets, wheel_dirs)
    assert not re.search(r"pip install\s+(-e\s+)?\.(\s|$|\[)", " ".join(final)), "the final stage installs the checkout"


def test_dockerignore_keeps_what_the_build_copies():
    """The build context is the repository root: .dockerignore sends only what the build stage copies (not the
    virtual environments beside it), and keeps all of that."""
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    assert patterns[0] == "*", "an allow-list: everything out, then what the build copies back in"
    kept = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    *builders, _ = dockerfile_stages()
    copied = {source.rstrip("/") for _, lines in builders for stage, sources, _ in copies(lines) for source in sources}
    assert copied <= kept, f".dockerignore drops {copied - kept}, which the build copies"
