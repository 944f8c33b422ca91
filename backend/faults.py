"""Faults that stop a run: what more calls cannot fix, so the spending stops at once.

The engine (prelabel.engine) keeps the first stop reason and refuses every later paid call with RunStopped;
the labeler turns that into a failed item (tried again on the next run), never into a provider error.
`storage_fault` is the one place that tells which errors of the store (SQLite, the file system) are such
faults.
"""

from __future__ import annotations

import errno
import os
import sqlite3


class RunStopped(Exception):
    """A fault that more calls cannot fix (disk full, a read-only output or MODEL_DIR) stopped the run: no
    further paid call is made. Not a ProviderError, so no retry or fallback takes it for a provider's answer."""


# SQLite's primary result codes (the low byte of an extended code) that mean the store's disk or file cannot
# be written: more calls cannot fix them.
_SQLITE_STORAGE_CODES = {
    8: "SQLITE_READONLY",  # attempt to write a readonly database (read-only file or mount, a moved file)
    10: "SQLITE_IOERR",  # disk I/O error
    11: "SQLITE_CORRUPT",  # database disk image is malformed
    13: "SQLITE_FULL",  # database or disk is full
    14: "SQLITE_CANTOPEN",  # unable to open database file
    26: "SQLITE_NOTADB",  # file is not a database
}
# SQLITE_BUSY and SQLITE_LOCKED: another connection holds the lock; waiting fixes it.
_SQLITE_BUSY_CODES = {5, 6}
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM}


def storage_fault(error: BaseException) -> str | None:
    """The reason, when `error` says the disk or file under the store cannot be written (disk full, read-only,
    I/O error, no permission, a file that cannot be opened); None for anything else (a lock held by another
    process is not a fault: it is waited for)."""
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE_STORAGE_CODES:
            return str(error)
        text = str(error).lower()
        known = ("disk is full", "readonly database", "disk i/o error", "unable to open database", "malformed")
        return str(error) if code is None and any(part in text for part in known) else None
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
        return error.strerror or os.strerror(error.errno)
    return None


def lock_contention(error: BaseException) -> bool:
    """True when SQLite refused because another connection holds the lock ("database is locked"): retried."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_BUSY_CODES
    return "locked" in str(error) or "busy" in str(error)


def store_fault_message(path: object, reason: str) -> str:
    """The one message of a store that cannot be written, naming its path."""
    return f"MODEL_DIR {path}: cannot write the store: {reason}"


class StoreUnavailable(OSError):
    """The store under MODEL_DIR cannot be written at start (read-only, not creatable, full): refused before
    any paid call. An OSError, so the CLI reports it as one line, like any file it cannot write."""
