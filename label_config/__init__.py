"""The Label Studio labeling configs shipped with prelabel, one XML file per task kind (package data)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

NAMES = ("summarization", "sentiment", "summarization_prompt")


def read(name: str) -> str:
    """The XML of the shipped config `name` (e.g. "summarization")."""
    return files(__name__).joinpath(f"{name}.xml").read_text(encoding="utf-8")


def path(name: str) -> Path:
    """The file of the shipped config `name`: wheels install unzipped, so this is a real path."""
    return Path(str(files(__name__).joinpath(f"{name}.xml")))
