"""What an export writes and where, and what it reports: the options, the selection's counts, one
training example and the finished export's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from prelabel.judge import LEVELS, MAX_LEVEL, threshold_level
from prelabel.label_interface import TaskKind
from prelabel.quality.dataset import DatasetQuality

FormatName = Literal["openai", "bedrock", "alpaca", "sharegpt", "parquet"]
FORMATS: tuple[FormatName, ...] = ("openai", "bedrock", "alpaca", "sharegpt", "parquet")
Origin = Literal["human", "llm"]

DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "summarization": "Summarize the conversation between two users in one paragraph, keeping every important point.",
    "classification": "Classify the sentiment of the text as one of: {labels}.",
}
DEFAULT_THRESHOLD = LEVELS.index("good")


class ExportOptions(BaseModel):
    """What to write and where. `instruction` defaults from `kind` (and `labels` for classification)."""

    out_dir: Path
    formats: list[FormatName] = Field(default_factory=lambda: list(FORMATS))
    kind: TaskKind = "summarization"
    labels: list[str] = []
    instruction: str | None = None
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    threshold: int = DEFAULT_THRESHOLD
    # Reviews without a recorded inclusion probability taken as a uniform random sample (prelabel.quality).
    assume_random: bool = False

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, value: list[FormatName]) -> list[FormatName]:
        if not value:
            raise ValueError(f"choose at least one format of {list(FORMATS)}")
        return list(dict.fromkeys(value))

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_level(cls, value: Any) -> int:
        # Accept "good", "3" or 3: the CLI and config files pass names, code passes ints.
        if isinstance(value, str):
            return threshold_level(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LEVEL:
            raise ValueError(f"threshold must be a level 0..{MAX_LEVEL} or one of {list(LEVELS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _resolve_instruction(self) -> ExportOptions:
        if self.instruction is None:
            if self.kind == "classification" and not self.labels:
                raise ValueError("classification needs its class labels for the default instruction")
            self.instruction = DEFAULT_INSTRUCTIONS[self.kind]
        self.instruction = self.instruction.replace("{labels}", ", ".join(self.labels)).strip()
        if not self.instruction:
            raise ValueError("instruction must not be empty")
        return self

    @property
    def threshold_name(self) -> str:
        return LEVELS[self.threshold]

    def manifest_options(self) -> dict[str, Any]:
        # The output path is left out so the same data exported anywhere yields a byte-identical manifest.
        return {
            "formats": list(self.formats),
            "kind": self.kind,
            "labels": list(self.labels),
            "instruction": self.instruction,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "threshold": self.threshold,
            "threshold_name": self.threshold_name,
            "assume_random": self.assume_random,
        }


class SelectionCounts(BaseModel):
    """Why each input task was exported or not. Every task lands in exactly one bucket."""

    human: int = 0
    llm_accepted: int = 0
    dropped_low_rating: int = 0
    dropped_unedited_low_rating: int = 0  # reviewer submitted the LLM's label unedited, rated below threshold
    dropped_unrated: int = 0
    dropped_no_label: int = 0
    dropped_no_input: int = 0
    dropped_duplicate: int = 0

    @property
    def exported(self) -> int:
        return self.human + self.llm_accepted

    @property
    def dropped(self) -> int:
        return (
            self.dropped_low_rating
            + self.dropped_unedited_low_rating
            + self.dropped_unrated
            + self.dropped_no_label
            + self.dropped_no_input
            + self.dropped_duplicate
        )

    @property
    def total(self) -> int:
        return self.exported + self.dropped


class TrainingExample(BaseModel):
    """One selected training pair and where it came from."""

    task_id: int
    input: str
    output: str
    origin: Origin
    source_id: str | None = None
    llm_level: int | None = None
    human_level: int | None = None
    # The reviewer's rating may have started from the judge's level (pre-filled before blind reviews).
    rating_anchored: bool = False
    model_version: str | None = None
    round: str | None = None


class ExportReport(BaseModel):
    out_dir: Path
    counts: SelectionCounts
    splits: dict[str, int]
    origins: dict[str, int]
    files: dict[str, Path]  # relative name ("openai/train.jsonl") -> absolute path
    manifest: Path
    provenance: Path
    card: Path | None = None
    quality: DatasetQuality | None = None
    anchored_ratings: int = 0  # exported examples whose reviewer's rating is possibly anchored
