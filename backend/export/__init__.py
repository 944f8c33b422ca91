"""The fine-tuning dataset: reviewed tasks in, chat / instruction files out.

Each task contributes at most one example: the reviewer's label when there is one, else the LLM's label
when its rating reaches the threshold. Provenance (task, origin, levels, model version) goes to a side
file, never into the training text, so the model learns the task and not our bookkeeping.

The modules, in the order an export uses them:
    options      what to write and where (ExportOptions); the selection's counts, one example, the report
    selection    which tasks become examples, and the seeded train/validation split
    formats      one row per example in each format (OpenAI, Bedrock, Alpaca, ShareGPT), the JSONL and Parquet writers
    layout       the export directory: file names, the provenance keys, the checksums the manifest records
    writer       export_dataset: every format, provenance and manifest staged, then swapped into place
    validation   validate_export: checksums, each format file's shape, the provenance file
"""

from __future__ import annotations


class ExportError(RuntimeError):
    """The export could not be written; any previous export at the target is left as it was."""
