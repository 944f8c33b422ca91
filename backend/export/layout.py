"""The export directory, as the writer lays it out and the validator reads it back:

<out>/<format>/train.<ext>, <out>/<format>/validation.<ext>   one pair per format
<out>/provenance.jsonl                                        one line per example, files' order
<out>/manifest.json                                           counts, options, quality, sha256 of every file
<out>/README.md                                               the dataset card: origins and quality
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "manifest.json"
PROVENANCE = "provenance.jsonl"
CARD = "README.md"
MANIFEST_SCHEMA = "prelabel.export/1"

PROVENANCE_KEYS: tuple[str, ...] = (
    "example_id",
    "split",
    "task_id",
    "source_id",
    "origin",
    "llm_level",
    "human_level",
    "rating_anchored",
    "model_version",
    "round",
)


def example_id(split: str, index: int) -> str:
    """A provenance line's example id: the example's line number within its split's files."""
    return f"{split}-{index:06d}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def line_count(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)
