"""Faults that stop a run: what more calls cannot fix, so the spending stops at once.

The engine (prelabel.engine) keeps the first stop reason and refuses every later paid call with RunStopped;
the labeler turns that into a failed item (tried again on the next run), never into a provider error.
"""

from __future__ import annotations


class RunStopped(Exception):
    """A fault that more calls cannot fix (disk full, a read-only output or MODEL_DIR) stopped the run: no
    further paid call is made. Not a ProviderError, so no retry or fallback takes it for a provider's answer."""
