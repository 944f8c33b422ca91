"""Data shipped inside the package (read through importlib.resources, so an installed wheel has it too):
the DialogSum slice the demo draws its rounds from. See dialogsum/README.md for source and licence."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DIALOGSUM_ATTRIBUTION = "DialogSum dev split (Chen et al., Findings of ACL 2021), CC BY-NC-SA 4.0"


def dialogsum_dev() -> Path:
    """500 DialogSum dialogues (fields fname, dialogue, summary, topic)."""
    return Path(str(files(__name__).joinpath("dialogsum", "dialogsum.dev.jsonl")))
