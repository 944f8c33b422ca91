"""The output file of a labeling run: one JSON line per item, appended with a single write, and what a rerun
reads back from it to resume (done items are skipped, failed ones tried again, a cut last line removed).

The file is prelabel's alone. Before anything is changed, every line is checked to be a prelabel record, so a
pool, a corrections file or a CSV named as --output by mistake is refused and left byte for byte as it was
(`NotAnOutputError`); one run at a time holds it (`claim_output`, an OS lock that dies with its process); and a
file labeled under another model_version is not silently continued (`ModelVersionChanged`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prelabel.pipeline import unrated_is_transient

if TYPE_CHECKING:
    from prelabel.pipeline import LabelOutcome


class BulkRecord(BaseModel):
    """One line of the output JSONL."""

    source_id: str
    label: str | None = None
    rating: str | None = None
    level: int | None = None
    score: float | None = None
    reason: str | None = None
    unrated_reason: str | None = None
    error: str | None = None
    model_version: str | None = None
    warnings: list[str] | None = None
    # A jury's: each juror's level by its provider:model (None: it gave none), and their spread (max - min).
    # Written only with several jurors, so a single judge's lines are as they were.
    jury: dict[str, int | None] | None = None
    disagreement: int | None = None

    @property
    def rated(self) -> bool:
        return self.level is not None

    @classmethod
    def from_outcome(cls, sid: str, outcome: LabelOutcome) -> BulkRecord:
        verdict = outcome.verdict
        return cls(
            source_id=sid,
            label=outcome.label if outcome.error is None else None,
            rating=verdict.level_name if verdict else None,
            level=verdict.level if verdict else None,
            score=outcome.score,
            reason=verdict.reason if verdict else None,
            unrated_reason=outcome.unrated_reason,
            error=outcome.error,
            model_version=outcome.model_version,
            warnings=outcome.warnings or None,
            jury={juror.model: juror.level for juror in outcome.jury} or None,
            disagreement=outcome.disagreement if outcome.jury else None,
        )

    def line_data(self) -> dict[str, Any]:
        """The fields a line holds: every one, but warnings and the jury's only when there are some."""
        optional = {"warnings": self.warnings, "jury": self.jury, "disagreement": self.disagreement}
        return self.model_dump(exclude={name for name, value in optional.items() if not value and value != 0} or None)

    def line(self) -> bytes:
        """The record as one UTF-8 JSON line, whatever its text holds: a lone surrogate (JSON allows "\\ud800"
        in an id) cannot be UTF-8, so such a record is written with \\u escapes, which read back the same."""
        data = self.line_data()
        text = json.dumps(data, ensure_ascii=False)
        try:
            return (text + "\n").encode("utf-8")
        except UnicodeEncodeError:
            return (json.dumps(data, ensure_ascii=True) + "\n").encode("ascii")


# Every line prelabel writes has all of these keys and no other than BulkRecord's, and starts with LINE_START.
RECORD_FIELDS = frozenset(BulkRecord.model_fields)
REQUIRED_FIELDS = frozenset(RECORD_FIELDS - {"warnings", "jury", "disagreement"})
LINE_START = b'{"source_id": '


class OutputRefused(Exception):
    """The output file cannot be used for this run; nothing in it was changed."""


class NotAnOutputError(OutputRefused):
    """The file named as the output holds something other than prelabel's records."""


class ModelVersionChanged(OutputRefused):
    """The output holds labels of another model_version than this run's (a prompt or a model changed)."""


class OutputBusy(OutputRefused):
    """Another run holds the output."""


class ResumeState(BaseModel):
    """What an earlier run left in the output file."""

    done: set[str] = set()
    labeled: int = 0
    retrying: int = 0  # failed items dropped from the file, to be tried again
    rerating: int = 0  # items left unrated by a passing judge failure, dropped to be rated again
    relabeling: dict[str, int] = {}  # model_version -> its lines dropped to be labeled again (relabel)
    dropped_partial_line: bool = False
    dropped_duplicates: int = 0


class _Rules(BaseModel):
    retry_failed: bool
    model_version: str | None
    relabel: bool


def prepare_output(
    path: Path,
    retry_failed: bool = True,
    repair: bool = True,
    *,
    model_version: str | None = None,
    relabel: bool = False,
) -> ResumeState:
    """Read the output of an earlier run and (with `repair`) leave the file holding only lines to keep.

    The whole file is checked first and nothing is changed unless every complete line is a prelabel record
    (NotAnOutputError otherwise). With `model_version`, lines of another version are refused
    (ModelVersionChanged) or, with `relabel`, dropped so their items are labeled again.

    A final line without its newline (the process was killed while writing it) is cut off. Lines of failed
    items (when retrying them), of items left unrated by a passing judge failure (likewise), and repeated
    source ids are removed by rewriting the file to a temporary one and renaming it over the original, so a
    crash during the repair loses nothing. The file is read as a stream: memory holds the ids, not the lines.
    """
    state = ResumeState()
    if not path.exists():
        return state
    if not path.is_file():  # a directory, /dev/full, a pipe: never read to its end or repaired
        raise NotAnOutputError(f"{path} is not a regular file: name a file as --output")
    rules = _Rules(retry_failed=retry_failed, model_version=model_version, relabel=relabel)
    other_versions: dict[str, int] = {}
    keep_end = 0  # byte offset just past the last complete line
    rewrite = False
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                _check_cut_line(path, number, raw)
                state.dropped_partial_line = True
                break
            keep_end += len(raw)
            record = _read_record(path, number, raw)
            if record is None:
                continue
            verdict = _classify(record, state, rules)
            if verdict == "other-version":
                version = str(record["model_version"])
                other_versions[version] = other_versions.get(version, 0) + 1
            if verdict != "keep":
                rewrite = True
    if other_versions:
        raise ModelVersionChanged(_version_message(path, other_versions, model_version or ""))
    if not repair:
        return state
    if rewrite:
        _rewrite(path, keep_end, rules)
    elif state.dropped_partial_line:
        os.truncate(path, keep_end)
    return state


def _not_ours(path: Path, number: int, why: str) -> str:
    return (
        f"{path} is not a prelabel output (line {number}: {why}); it was left as it was. Name a new file as "
        "--output (an existing one must be an earlier output of `prelabel label`)"
    )


def _check_cut_line(path: Path, number: int, raw: bytes) -> None:
    """A last line without its newline is the start of a record whose write was cut short; a whole JSON value
    there (a one-line file without a final newline) must be one of prelabel's records to be cut off."""
    try:
        json.loads(raw)
    except ValueError:
        if not (raw.startswith(LINE_START) or LINE_START.startswith(raw.lstrip())):
            raise NotAnOutputError(_not_ours(path, number, "it does not start as a prelabel record does")) from None
        return
    _read_record(path, number, raw)


def _read_record(path: Path, number: int, raw: bytes) -> dict[str, Any] | None:
    """The line's record (None for a blank line); NotAnOutputError unless it is one prelabel wrote."""
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError as error:
        raise NotAnOutputError(_not_ours(path, number, f"not JSON: {error}")) from None
    if not isinstance(record, dict):
        raise NotAnOutputError(_not_ours(path, number, f"a JSON {type(record).__name__}, not a record"))
    foreign = sorted(set(record) - RECORD_FIELDS)
    missing = sorted(REQUIRED_FIELDS - set(record))
    if foreign or missing:
        detail = f"has field(s) {', '.join(map(repr, foreign[:5]))}" if foreign else ""
        if missing:
            detail += ("; " if detail else "") + f"lacks {', '.join(map(repr, missing[:5]))}"
        raise NotAnOutputError(_not_ours(path, number, detail))
    if not isinstance(record["source_id"], str) or not isinstance(record["model_version"], str | None):
        raise NotAnOutputError(_not_ours(path, number, "source_id or model_version is not a string"))
    return record


def _classify(record: dict[str, Any], state: ResumeState, rules: _Rules) -> str:
    sid = record["source_id"]
    if sid in state.done:
        state.dropped_duplicates += 1
        return "duplicate"
    failed = record.get("error") is not None
    if failed and rules.retry_failed:
        state.retrying += 1
        return "retry"
    version = record.get("model_version")
    if rules.model_version is not None and version is not None and version != rules.model_version:
        if not rules.relabel:
            return "other-version"
        state.relabeling[version] = state.relabeling.get(version, 0) + 1
        return "relabel"
    if not failed and rules.retry_failed and unrated_is_transient(record.get("unrated_reason")):
        state.rerating += 1
        return "rerate"
    state.done.add(sid)
    if not failed:
        state.labeled += 1
    return "keep"


def _version_message(path: Path, others: dict[str, int], current: str) -> str:
    listed = ", ".join(f"{version!r} ({count:,} lines)" for version, count in list(others.items())[:3])
    if len(others) > 3:
        listed += f" and {len(others) - 3} more"
    return (
        f"{path} holds labels of model_version {listed}, but this run's model_version is {current!r} (a prompt or "
        "a model changed); nothing was labeled. Name a new --output to keep both, or pass --relabel to label "
        "those items again under the new version (their lines are replaced)"
    )


def _rewrite(path: Path, end: int, rules: _Rules) -> None:
    scratch = ResumeState()
    temporary = path.with_name(path.name + ".resume-tmp")
    with path.open("rb") as source, temporary.open("wb") as target:
        position = 0
        for raw in source:
            position += len(raw)
            if position > end:
                break
            if raw.strip() and _classify(json.loads(raw), scratch, rules) == "keep":
                target.write(raw)
        target.flush()
        os.fsync(target.fileno())
    os.replace(temporary, path)


class OutputWriteError(OSError):
    """The output file could not be written (disk full, read-only, too large): the run stops."""


class OutputWriter:
    """Appends one line per item with a single write() on an O_APPEND descriptor.

    A write that fails part way is cut back to the last whole line, and every later write is refused with
    the first error: a half line never gets another line glued onto it.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._size = os.fstat(self._fd).st_size  # this run holds the file (claim_output): nobody else appends
        self._lock = threading.Lock()
        self.fault: str | None = None

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.fault is not None:
                raise OutputWriteError(self.fault)
            if self._fd < 0:
                raise OutputWriteError(f"{self.path}: the output is closed")
            view = memoryview(data)
            try:
                while view:
                    written = os.write(self._fd, view)
                    if written <= 0:
                        raise OSError(f"{self.path}: nothing was written")
                    view = view[written:]
            except BaseException as error:
                self.fault = f"{self.path}: {error.strerror if isinstance(error, OSError) else error}"
                try:
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    pass  # a read-only file wrote nothing to take back
                if isinstance(error, OSError):
                    raise OutputWriteError(self.fault) from error
                raise
            self._size += len(data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


# -- one run per output ---------------------------------------------------------------------------------------


def lock_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


_held: dict[Path, tuple[int, int, int]] = {}  # lock path -> (fd, owning thread, depth)
_held_lock = threading.Lock()


@contextmanager
def claim_output(output: Path) -> Iterator[None]:
    """Hold `output` for one run: a second run (another process or thread) is refused at once with OutputBusy
    naming the holder. The lock is flock() on `<output>.lock`: the kernel drops it when the process dies, so a
    killed run leaves no stale lock. The same thread may claim again (the CLI claims, then label_file)."""
    lock_path = lock_path_for(output).absolute()
    me = threading.get_ident()
    with _held_lock:
        held = _held.get(lock_path)
        if held is not None and held[1] == me:
            _held[lock_path] = (held[0], me, held[2] + 1)
            nested = True
        else:
            nested = False
    if not nested:
        fd = _acquire(lock_path, output)
        with _held_lock:
            _held[lock_path] = (fd, me, 1)
    try:
        yield
    finally:
        with _held_lock:
            fd, owner, depth = _held[lock_path]
            if depth > 1:
                _held[lock_path] = (fd, owner, depth - 1)
            else:
                del _held[lock_path]
                _release(lock_path, fd)


def _acquire(lock_path: Path, output: Path) -> int:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise OutputRefused(f"{output}: cannot create its lock file {lock_path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusy(
                f"{output} is being written by another prelabel run ({holder}); two runs on one output would "
                "interleave their lines. Wait for it to end or stop it, or name another --output"
            ) from None
        # The previous holder removes the file as it ends: make sure the lock is on the file that is there now.
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            started = time.strftime("%Y-%m-%d %H:%M:%S %z")
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "output": str(output)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
            return fd
        os.close(fd)
    raise OutputRefused(f"{output}: could not lock {lock_path}: it kept being replaced")


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it is just starting"


def _release(lock_path: Path, fd: int) -> None:
    try:
        current = os.stat(lock_path)
        mine = os.fstat(fd)
        if (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            os.unlink(lock_path)  # while still locked: a run that opened it meanwhile sees it gone and retries
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_same_file(input_path: Path, output: Path) -> None:
    """The output must not be the input (the same file under any name)."""
    try:
        same = output.exists() and input_path.exists() and os.path.samefile(input_path, output)
    except OSError:
        same = False
    if same:
        raise OutputRefused(f"--output {output} is the input file {input_path}: name a new file for the results")


def previous_records(path: Path, limit: int) -> Iterator[dict[str, Any]]:
    """Up to `limit` labeled records of an earlier run's output (for estimates)."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for raw in handle:
            if limit <= 0:
                return
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("label") and record.get("error") is None:
                limit -= 1
                yield record
