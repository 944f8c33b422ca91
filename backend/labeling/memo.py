"""The item memo of bulk runs: an item labeled before under the same labeler is answered with one lookup.

Labeling a pool again into a fresh output with every call in the call cache (a cached rerun) would still do, per
item, what labeling does: parse the dialogue, render both prompts, hash both cache keys, read and validate both
answers, parse the verdict and build the record. The memo keeps each finished record under one key: the sha256
of the labeler's fingerprint (everything that shapes a record: the model_version, both prompts' text, both
calls' providers and parameters, the label config, the input's truncation, the family warning, and the source
of the code that turns answers into records) and the canonical JSON of the item's input value. A run reads a
block of items ahead, looks their keys up with one query, and writes each hit as the loop reaches it, in input
order: the very line labeling would write, one cache-hit row per call in the usage log, the same counts.

Kept: an item whose record came wholly from answers (cached or paid for) and is final: labeled and rated,
labeled where no judge is asked, or unrated for a reason a rerun does not change (the judge's answer did not
parse twice). Never a failure, never an item a passing judge fault left unrated. A row is kept only once the
answers it was made from are in the call cache, and is part of it: nothing in prelabel removes cache entries, and
whoever clears llm_cache by hand clears item_memo with it. (Checking each hit's two entries would cost a sixth of
a cached rerun's time.) With PRELABEL_CACHE=0 the memo is neither read nor written.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prelabel.engine import ANSWER_KEYS, answer_slot
from prelabel.fencing import RENDER_FORMAT
from prelabel.labeling.output import LINE_START, BulkRecord
from prelabel.pipeline import Labeler, LabelOutcome, unrated_is_transient

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.labeling.items import Item

log = logging.getLogger("prelabel")

# Bump when the memo's own layout changes (its rows are then simply not found again).
MEMO_FORMAT = 1
# Items read ahead and looked up together; records to remember are queued this many at a time.
BLOCK = 256
# How often the usage rows of memo hits go to the store's writer (as often as a bulk run's other usage rows).
HIT_LOG_INTERVAL = 0.2
# The code between an answer and its line: a change to any of these makes every earlier memo row a miss.
RECORD_CODE = (
    "prelabel.pipeline",
    "prelabel.judge",
    "prelabel.dialogue",
    "prelabel.fencing",
    "prelabel.prompts",
    "prelabel.labeling.output",
    "prelabel.labeling.memo",
)

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # ASCII: no lone surrogate breaks it
# (record, annotator_key, judge_key), as Store.memo_records gives it. A jury's judge_key holds every juror's key in
# PRELABEL_JUDGE's order, joined by JURY_KEYS_SEPARATOR (empty for a juror that gave no rating).
Hit = tuple[str, str, str | None]
JURY_KEYS_SEPARATOR = ","
Labeling = Callable[[Any, tuple[str, bool] | None], Awaitable[LabelOutcome]]  # as Labeler.label


class MemoEntry:
    """An item's memo key, and its stored row when the memo has one."""

    __slots__ = ("source_id", "key", "hit")

    def __init__(self, source_id: str, key: str, hit: Hit | None = None):
        self.source_id = source_id
        self.key = key
        self.hit = hit


class MemoHit:
    """A record read back from the memo, as much of it as a run needs: its line (the stored one with the item's
    source id, not made again) and what the summary counts. Not a model: a cached rerun makes one per item."""

    __slots__ = ("source_id", "_line", "error", "unrated_reason", "rated")

    def __init__(self, source_id: str, line: bytes, fields: dict[str, Any]):
        self.source_id = source_id
        self._line = line
        self.error: str | None = fields.get("error")
        self.unrated_reason: str | None = fields.get("unrated_reason")
        self.rated = fields.get("level") is not None

    def line(self) -> bytes:
        return self._line


@functools.lru_cache(maxsize=1)
def code_digest() -> str | None:
    """sha256 of the source of RECORD_CODE; None when a module's source cannot be read (no memo then)."""
    digest = hashlib.sha256()
    for name in RECORD_CODE:
        path = getattr(importlib.import_module(name), "__file__", None)
        try:
            source = Path(path).read_bytes() if path else None
        except OSError:
            source = None
        if source is None:
            return None
        digest.update(b"%s %d:" % (name.encode("ascii"), len(source)))
        digest.update(source)
    return digest.hexdigest()


def fingerprint(engine: Engine, labeler: Labeler) -> str | None:
    """Everything besides the input that shapes an item's record, as one digest; None when the labeler's records
    cannot be memoized (a subclass with prompts or parsing of its own, as few-shot labeling has)."""
    if type(labeler) is not Labeler:
        return None
    code = code_digest()
    if code is None:
        return None
    annotator = engine.annotator.ref
    parts: dict[str, Any] = {
        "memo_format": MEMO_FORMAT,
        "code": code,
        "model_version": labeler.model_version,
        "prompts": [labeler.prompts.name, labeler.prompts.annotator, labeler.prompts.judge, RENDER_FORMAT],
        "annotator": [annotator.provider, annotator.model, annotator.base_url, labeler.annotator_params.cache_fields()],
        "judges": [
            [juror.ref.provider, juror.ref.model, juror.ref.base_url, params.cache_fields()]
            for juror, params in zip(engine.jurors, labeler.juror_params)
        ],
        "uses_judge": labeler.uses_judge,
        "config": labeler.config.model_dump_json(),
        "max_input_chars": engine.settings.prelabel_max_input_chars,
        "family_warning": engine.family_warning,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def memo_line(source_id: str, record: str) -> bytes:
    """The output line of a stored record (its JSON without source_id) for one item: what BulkRecord.line()
    gives for it, byte for byte."""
    try:
        head = LINE_START + json.dumps(source_id, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the id: line() writes the whole record with \\u escapes
        return BulkRecord(source_id=source_id, **json.loads(record)).line()
    return b"%s, %s\n" % (head, record[1:].encode("utf-8"))


def stored_record(record: BulkRecord) -> str | None:
    """The record as the memo keeps it: its line's JSON without source_id (None when its text cannot be UTF-8,
    so its line would not be the stored one with another id in front)."""
    data = record.line_data()
    del data["source_id"]
    text = json.dumps(data, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


class ItemMemo:
    """The memo as one bulk run uses it (BulkRun._drive): reads ahead and looks up, answers hits, and remembers
    the final records of items labeled the usual way (from the cache alone or by calls)."""

    def __init__(self, engine: Engine, labeler: Labeler):
        self.store = engine.store
        self.labeler = labeler
        digest = fingerprint(engine, labeler) if engine.settings.prelabel_cache else None
        self.enabled = digest is not None
        self._base = hashlib.sha256(digest.encode("ascii")) if digest is not None else None
        self._data_key = labeler.config.data_key
        annotator = engine.annotator.ref
        self._annotator = ("annotator", annotator.provider, annotator.model)
        self._jurors = [juror.ref for juror in engine.jurors]
        self._judges = [("judge", juror.provider, juror.model) for juror in self._jurors]
        self._hit_rows: list[tuple[str, str, str, str]] = []  # usage rows of the hits written
        self._hits_queued = time.monotonic()
        self._memo_rows: list[tuple[str, str, str, str | None]] = []  # records to remember, queued per block

    def key(self, task: Any) -> str | None:
        """The item's memo key: the fingerprint and the canonical JSON of its input value (None when it has none)."""
        if self._base is None:
            return None
        try:
            value = task["data"][self._data_key]
            payload = _CANONICAL.encode(value).encode("ascii")
        except (KeyError, TypeError, ValueError):
            return None  # no input, or one that labeling refuses anyway
        digest = self._base.copy()
        digest.update(payload)
        return digest.hexdigest()

    # -- reading ahead --------------------------------------------------------------------------------------

    def read_ahead(self, items: Iterator[Item], skip: set[str]) -> Iterator[tuple[Item, MemoEntry | None]]:
        """The items in input order, each with its memo entry (None when the memo is off or the item cannot be
        memoized); read and looked up BLOCK at a time. Items whose source id is in `skip` are not looked up."""
        if not self.enabled:
            for item in items:
                yield item, None
            return
        iterator = iter(items)
        while True:
            block: list[Item] = []
            failure: Exception | None = None
            finished = False
            try:
                while len(block) < BLOCK:
                    block.append(next(iterator))
            except StopIteration:
                finished = True
            except Exception as error:  # the items read before it are handled first, as without reading ahead
                failure = error
            yield from zip(block, self._look_up(block, skip))
            self._queue()
            if failure is not None:
                raise failure
            if finished:
                return

    def _look_up(self, block: Sequence[Item], skip: set[str]) -> list[MemoEntry | None]:
        entries: list[MemoEntry | None] = []
        for item in block:
            key = None
            if item.task is not None and item.error is None and item.source_id not in skip:
                key = self.key(item.task)
            entries.append(None if key is None else MemoEntry(item.source_id, key))
        keys = [entry.key for entry in entries if entry is not None]
        if keys:
            found = self.store.memo_records(keys)
            for entry in entries:
                if entry is not None:
                    entry.hit = found.get(entry.key)
        return entries

    # -- answering ------------------------------------------------------------------------------------------

    def answer(self, source_id: str, entry: MemoEntry | None) -> MemoHit | None:
        """The record of a memo hit, its calls logged as the cache hits they stand for; None for a miss."""
        if entry is None or entry.hit is None:
            return None
        stored, annotator_key, judge_key = entry.hit
        try:
            fields = json.loads(stored)
            line = memo_line(source_id, stored)
        except Exception:  # a row that does not read back (changed by hand): labeled the usual way
            log.debug("item %s: its memo row does not read back", source_id, exc_info=True)
            return None
        record = MemoHit(source_id, line, fields)
        self._hit_rows.append((*self._annotator, annotator_key))
        if judge_key is not None:
            keys = judge_key.split(JURY_KEYS_SEPARATOR) if len(self._judges) > 1 else [judge_key]
            self._hit_rows.extend((*juror, key) for juror, key in zip(self._judges, keys) if key)
        return record

    def label_from_cache(self, item: Item, read: tuple[str, bool], entry: MemoEntry | None) -> BulkRecord | None:
        """`Labeler.label_from_cache` as a record, remembered when it is final."""
        answered: dict[str, str] = {}
        token = ANSWER_KEYS.set(answered)
        try:
            outcome = self.labeler.label_from_cache(item.task, read)
        finally:
            ANSWER_KEYS.reset(token)
        if outcome is None:
            return None
        record = BulkRecord.from_outcome(item.source_id, outcome)
        self._remember(entry, outcome, record, answered)
        return record

    async def label(self, entry: MemoEntry, task: Any, read: tuple[str, bool] | None) -> LabelOutcome:
        """`Labeler.label`, its outcome remembered when it is final (the live path)."""
        answered: dict[str, str] = {}
        token = ANSWER_KEYS.set(answered)  # this task's own context: no other item's calls are seen
        try:
            outcome = await self.labeler.label(task, read)
        finally:
            ANSWER_KEYS.reset(token)
        self._remember(entry, outcome, None, answered)
        return outcome

    def labeling(self, entry: MemoEntry | None) -> Labeling | None:
        """What the live path labels an item with: `label` for this entry, or None (the labeler's own)."""
        if entry is None:
            return None
        return functools.partial(self.label, entry)

    def _remember(
        self, entry: MemoEntry | None, outcome: LabelOutcome, record: BulkRecord | None, answered: dict[str, str]
    ) -> None:
        """Keep a final outcome's record (`record`: its BulkRecord, when the caller has it already)."""
        if entry is None or outcome.error is not None or outcome.label is None:
            return
        if unrated_is_transient(outcome.unrated_reason):
            return  # a rerun asks the judge again
        if any(unrated_is_transient(juror.unrated_reason) for juror in outcome.jury):
            return  # a rerun asks that juror again
        annotator_key = answered.get("annotator")
        judge_key = answered.get("judge") if outcome.verdict is not None else None
        if outcome.jury and outcome.verdict is not None:
            keys = [
                answered.get(answer_slot("judge", ref), "") if juror.level is not None else ""
                for ref, juror in zip(self._jurors, outcome.jury)
            ]
            if any(juror.level is not None and not key for juror, key in zip(outcome.jury, keys)):
                return  # a juror's rating this run cannot name
            judge_key = JURY_KEYS_SEPARATOR.join(keys)
        if annotator_key is None or (outcome.verdict is not None and judge_key is None):
            return  # not wholly from answers this run can name
        try:
            record = record or BulkRecord.from_outcome(entry.source_id, outcome)
            stored = stored_record(record)
            # Never serve a line labeling would not write: checked here, once per record kept.
            if stored is None or memo_line(record.source_id, stored) != record.line():
                log.debug("item %s: its record is not kept in the memo (its line cannot be rebuilt)", entry.source_id)
                return
        except Exception:  # the memo only saves work: its failure must never fail the item
            log.exception("item %s: its record could not be kept in the memo", entry.source_id)
            return
        self._memo_rows.append((entry.key, stored, annotator_key, judge_key))
        if len(self._memo_rows) >= BLOCK:
            self._queue()

    # -- writing --------------------------------------------------------------------------------------------

    def _queue(self, everything: bool = False) -> None:
        """Hand the writer thread what this run has to remember, and the usage rows of its hits every
        HIT_LOG_INTERVAL (each commit makes the readers' page caches start afresh), without waiting."""
        now = time.monotonic()
        if self._hit_rows and (everything or now - self._hits_queued >= HIT_LOG_INTERVAL):
            rows, self._hit_rows = self._hit_rows, []
            self._hits_queued = now
            self.store.queue_cache_hits(rows)
        if self._memo_rows:
            memo_rows, self._memo_rows = self._memo_rows, []
            if self.store.fault is None:  # a store that cannot write (disk full) is not given more to write
                self.store.queue_memo_records(memo_rows)

    def close(self) -> None:
        """Queue what is left (the run's end)."""
        self._queue(everything=True)
