"""docker-compose.yml and backend/Dockerfile checked against the settings the code reads, so they cannot
drift apart (no Docker engine runs where the tests run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from prelabel.harness.labelstudio_server import BACKEND_FRIENDLY_ENV, LS_VERSION
from prelabel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "backend" / "Dockerfile").read_text()
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
