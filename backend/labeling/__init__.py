"""Labeling a whole pool into a JSONL file: reading the pool (`items`), the output file and resuming
(`output`), live calls with bounded concurrency (`live`) and the providers' batch APIs (`batch`)."""
