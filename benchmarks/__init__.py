"""Benchmarks: `python -m benchmarks.run` (or `make bench`)."""
