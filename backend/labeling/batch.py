"""Labeling a whole pool through the providers' batch APIs: `prelabel label --batch-api`.

OpenAI Batch and Anthropic Message Batches run the same requests as the live path at half the price, within
24 hours. A run goes:

1. Items not yet in the output (the resume rules of prelabel.labeling.output: done items are skipped, failed
   ones tried again, a cut last line repaired) become annotator requests, split into jobs at the provider's limits
   (OpenAI: 50,000 requests / 200 MB per JSONL file; Anthropic: 100,000 requests / 256 MB per batch).
   Answers already in the call cache are used instead (unless PRELABEL_CACHE is off).
2. When an annotator job ends, its answers go through the annotator's parser and into the call cache, and a
   judge job is submitted for the labels; when a judge job ends, each item's BulkRecord is appended to the
   output. Classification without a rating control has no judge stage.
3. Job ids are written to OUTPUT.batch.json (atomically) right after each submission, so a run whose process
   died is resumed by running the same command: open jobs are polled again, never submitted again. The file
   is removed once no job is open.

Requests carry the live path's prompts and parameters (Labeler, CallParams, providers' request bodies) and
answers are parsed by the live path's parsers (the providers' batch adapters: prelabel.providers.batch). The
judge stage reads the annotator's labels back from the call cache, so every answer a batch paid for is cached,
whatever PRELABEL_CACHE says; a later live run reuses them.

Retries:
- an answer that does not parse is asked once more as a live call (the live path's second try, at list
  price); an item whose annotator answer needed it is then judged live too;
- a request that its batch ended without running (expired, cancelled) goes into a new batch once
  (`resubmit_unrun`); if it is not run again the item fails (annotator) or stays unrated (judge), with the
  reason; a rerun of the command tries failed items again;
- a request the provider answered with an error is not resubmitted: the item fails (annotator) or stays
  unrated (judge) with the provider's message, as on the live path.

A jury (several judges in PRELABEL_JUDGE) is refused here (`refuse_jury`): the judge stage runs one judge. Label
with a jury on the live path.

Between a provider accepting a job and the state file recording it lies one HTTP round trip; a process killed
exactly there leaves a job that nothing collects (its items are submitted again by the next run, and the
output still holds each item once).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from prelabel.costs import RoleUsage, UsageMeter
from prelabel.dialogue import InputError
from prelabel.engine import Engine, build_engine, close_engine
from prelabel.families import ModelRef
from prelabel.interrupts import interrupt_on_sigterm
from prelabel.judge import JudgeParseError
from prelabel.label_interface import LabelConfig
from prelabel.labeling.items import Item, iter_items
from prelabel.labeling.live import MAX_LISTED_FAILURES, BulkSummary, Progress
from prelabel.labeling.output import BulkRecord, OutputWriter, prepare_output
from prelabel.pipeline import Labeler, LabelOutcome, parse_judge
from prelabel.pricing import batch_prices, load_prices
from prelabel.providers import CallParams, Completion, ProviderError
from prelabel.providers.batch import (
    PROVIDER_LIMITS,
    BatchAPI,
    BatchError,
    BatchLimits,
    JobStatus,
    RequestResult,
    batch_api_for,
    custom_id,
)
from prelabel.settings import Settings

log = logging.getLogger("prelabel")

Role = Literal["annotator", "judge"]
ROLES: tuple[Role, Role] = ("annotator", "judge")


class BatchStateError(RuntimeError):
    """The state file beside the output cannot be used for this run."""


class BatchOptions(BaseModel):
    poll_interval_s: float = Field(30.0, gt=0)
    wait: bool = True  # False: submit, collect what has ended, and return; a rerun collects the rest
    resubmit_unrun: int = Field(1, ge=0)  # new batches for requests a batch ended without running
    request_timeout_s: float = Field(600.0, gt=0)  # uploads of up to 256 MB take longer than a chat call
    limits: dict[str, BatchLimits] = {}  # per provider, overriding PROVIDER_LIMITS (tests use small ones)

    def limits_for(self, provider: str) -> BatchLimits:
        return self.limits.get(provider) or PROVIDER_LIMITS[provider]


class JobRecord(BaseModel):
    """One submitted job, as the state file keeps it."""

    id: str
    provider: Literal["openai", "anthropic"]
    role: Role
    round: int = 0  # 1 and up: a resubmission of requests an earlier job did not run
    source_ids: list[str]
    input_file_id: str | None = None
    submitted_at: float
    merged: bool = False


class BatchState(BaseModel):
    version: Literal[1] = 1
    model_version: str
    jobs: list[JobRecord] = []

    def open_jobs(self) -> list[JobRecord]:
        return [job for job in self.jobs if not job.merged]


class StateFile:
    """OUTPUT.batch.json: the jobs of a run, written whole to a temporary file and renamed over the old one."""

    def __init__(self, output: Path):
        self.path = output.with_name(output.name + ".batch.json")

    def load(self, model_version: str) -> tuple[BatchState, list[JobRecord]]:
        """The state to continue and the open jobs it holds (a fresh state when there is none)."""
        if not self.path.exists():
            return BatchState(model_version=model_version), []
        try:
            state = BatchState.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError) as error:
            raise BatchStateError(f"{self.path}: not a prelabel batch state file: {error}") from None
        open_jobs = state.open_jobs()
        if state.model_version != model_version:
            if open_jobs:
                raise BatchStateError(
                    f"{self.path} holds {len(open_jobs)} open batch job(s) of {state.model_version}, not "
                    f"{model_version}: rerun with the same prompts and models to collect them, or remove the "
                    "file to abandon them"
                )
            return BatchState(model_version=model_version), []
        return state, open_jobs

    def save(self, state: BatchState) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as handle:
            handle.write(state.model_dump_json(indent=1).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class BatchSummary(BulkSummary):
    state_file: str = ""
    jobs_resumed: list[str] = []  # open jobs found in the state file at start
    jobs_submitted: list[str] = []
    jobs_pending: list[str] = []  # still running when the run stopped: rerun the command to collect them
    resubmitted: int = 0  # requests sent again because their batch ended without running them
    live_retries: int = 0  # unparseable answers asked again live
    cache_hits: int = 0


class _JobBuilder:
    """Requests of one role collected into jobs; a job is submitted whenever the next request would not fit."""

    def __init__(self, run: BatchRun, role: Role, round: int = 0):
        self.run = run
        self.role = role
        self.round = round
        self.api = run.apis[role]
        self._entries: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._bytes = 0

    def add(self, sid: str, prompt: str, params: CallParams) -> str | None:
        """Queue one request; the reason it cannot be sent when it alone exceeds the job size limit."""
        entry = self.api.entry(custom_id(sid), prompt, params)
        size = len(json.dumps(entry, ensure_ascii=False).encode("utf-8")) + 1
        limits = self.api.limits
        if size > limits.max_bytes:
            return f"the request is {size:,} bytes, over the {self.api.provider} batch limit of {limits.max_bytes:,}"
        if self._entries and (len(self._entries) >= limits.max_requests or self._bytes + size > limits.max_bytes):
            self.flush()
        self._entries.append(entry)
        self._ids.append(sid)
        self._bytes += size
        return None

    def flush(self) -> None:
        if not self._entries:
            return
        run = self.run
        metadata = {"prelabel_role": self.role, "prelabel_model_version": run.labeler.model_version[:500]}
        job_id, file_id = self.api.submit(self._entries, metadata)
        job = JobRecord(
            id=job_id,
            provider=self.api.provider,
            role=self.role,
            round=self.round,
            source_ids=self._ids,
            input_file_id=file_id,
            submitted_at=time.time(),
        )
        run.state.jobs.append(job)
        run.state_file.save(run.state)  # at once: a run that dies from here on polls this job, never resubmits
        run.summary.jobs_submitted.append(job_id)
        run.event(
            f"submitted {self.api.provider} batch {job_id}: {len(self._ids):,} {self.role} requests"
            + (f" (resubmission {self.round})" if self.round else "")
        )
        self._entries, self._ids, self._bytes = [], [], 0


class BatchRun:
    """Labels the items of an input file through the providers' batch APIs into an output JSONL."""

    def __init__(
        self,
        engine: Engine,
        labeler: Labeler,
        input_path: Path,
        output: Path,
        *,
        input_field: str,
        options: BatchOptions,
        apis: dict[str, BatchAPI],
        meter: UsageMeter | None = None,
        batch_meter: UsageMeter | None = None,
        retry_failed: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ):
        self.engine = engine
        self.labeler = labeler
        self.input_path = input_path
        self.output = output
        self.input_field = input_field
        self.options = options
        self.apis = apis
        self.meter = meter
        prices = meter.prices if meter else load_prices(engine.settings.prelabel_prices)
        self.batch_meter = batch_meter or UsageMeter(batch_prices(prices))
        self.retry_failed = retry_failed
        self.on_progress = on_progress
        self.on_event = on_event
        self.read_cache = engine.settings.prelabel_cache
        self.state_file = StateFile(output)
        self.state = BatchState(model_version=labeler.model_version)
        self.summary = BatchSummary(
            output=str(output), model_version=labeler.model_version, state_file=str(self.state_file.path)
        )
        self._written: set[str] = set()
        self._writer: OutputWriter | None = None

    def event(self, message: str) -> None:
        log.info(message)
        if self.on_event is not None:
            self.on_event(message)

    # -- driving ----------------------------------------------------------------------------------------

    def run(self) -> BatchSummary:
        summary = self.summary
        self.state, open_jobs = self.state_file.load(self.labeler.model_version)
        summary.jobs_resumed = [job.id for job in open_jobs]
        if open_jobs:
            self.event(f"resuming {len(open_jobs)} open batch job(s) from {self.state_file.path}")
        state = prepare_output(self.output, self.retry_failed)
        summary.already_done = len(state.done)
        summary.retried_failed = state.retrying
        summary.dropped_partial_line = state.dropped_partial_line
        self._written = set(state.done)
        self._writer = OutputWriter(self.output)
        started = time.perf_counter()
        try:
            self._submit_new()
            self._collect()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            self._writer.close()
            summary.jobs_pending = [job.id for job in self.state.open_jobs()]
            if summary.jobs_pending:
                self.state_file.save(self.state)
            else:
                self.state_file.remove()
            summary.elapsed_s = time.perf_counter() - started
            summary.usage = self._usage()
            summary.cost_usd = self._cost()
        return summary

    def _open_ids(self, exclude: JobRecord | None = None) -> set[str]:
        return {sid for job in self.state.open_jobs() if job is not exclude for sid in job.source_ids}

    def _submit_new(self) -> None:
        """Every item neither done nor in an open job: from the cache where possible, else into new jobs."""
        in_jobs = self._open_ids()
        seen: set[str] = set()
        annotate, judge = _JobBuilder(self, "annotator"), _JobBuilder(self, "judge")
        for item in iter_items(self.input_path, self.input_field):
            sid = item.source_id
            if sid in self._written or sid in in_jobs:
                continue
            if sid in seen:
                self.summary.duplicates += 1
                continue
            seen.add(sid)
            self.summary.seen += 1
            started = self._begin(item)
            if started is None:
                continue
            text, outcome = started
            prompt = self.labeler.annotator_prompt(text)
            hit = self._cache_hit("annotator", prompt)
            if hit is not None:
                outcome.label = hit
                self._to_judge(sid, text, outcome, judge)
                continue
            reason = annotate.add(sid, prompt, self.labeler.annotator_params)
            if reason is not None:
                self._write(self.labeler.failed(item.task, f"annotator call failed: {reason}"), sid)
        annotate.flush()
        judge.flush()

    def _collect(self) -> None:
        """Poll the open jobs and merge each one as it ends, until none is open (or once, without waiting)."""
        while True:
            for job in self.state.open_jobs():
                status = self.apis[job.role].status(job)
                if status.ended:
                    self.event(f"{job.provider} batch {job.id} ({job.role}) ended: {status.status}")
                    self._merge(job, status)
                else:
                    log.debug(
                        "%s batch %s: %s, %d of %d done", job.provider, job.id, status.status, status.done, status.total
                    )
            if not self.state.open_jobs() or not self.options.wait:
                return
            time.sleep(self.options.poll_interval_s)

    # -- one item ---------------------------------------------------------------------------------------

    def _begin(self, item: Item) -> tuple[str, LabelOutcome] | None:
        """The item's input text and outcome, or None after writing it as failed (unreadable input)."""
        if item.task is None:
            self._write_record(
                BulkRecord(source_id=item.source_id, error=item.error, model_version=self.labeler.model_version)
            )
            return None
        try:
            return self.labeler.begin(item.task)
        except InputError as error:
            self._write(self.labeler.failed(item.task, f"bad input: {error}"), item.source_id)
            return None

    def _params(self, role: Role) -> CallParams:
        return self.labeler.annotator_params if role == "annotator" else self.labeler.judge_params

    def _ref(self, role: Role) -> ModelRef:
        return self.engine.annotator_ref if role == "annotator" else self.engine.judge_ref

    def _cache_hit(self, role: Role, prompt: str) -> Any:
        """An earlier answer to this exact call, parsed (a label or a (completion, verdict) pair)."""
        if not self.read_cache:
            return None
        parse = self.labeler.parse_label if role == "annotator" else parse_judge
        hit = self.engine.cached(role, self._ref(role), prompt, self._params(role), parse)
        if hit is None:
            return None
        self.summary.cache_hits += 1
        return hit[1] if role == "annotator" else hit

    def _to_judge(self, sid: str, text: str, outcome: LabelOutcome, judge: _JobBuilder) -> None:
        """A labeled item: written now when there is nothing to judge or the verdict is cached, else queued."""
        if not self.labeler.uses_judge:
            self._write(outcome, sid)
            return
        prompt = self.labeler.judge_prompt(text, outcome.label or "")
        hit = self._cache_hit("judge", prompt)
        if hit is not None:
            self.labeler.accept_verdict(outcome, *hit)
            self._write(outcome, sid)
            return
        reason = judge.add(sid, prompt, self.labeler.judge_params)
        if reason is not None:
            outcome.unrated_reason = f"judge call failed: {reason}"
            self._write(outcome, sid)

    def _accept(
        self, role: Role, prompt: str, completion: Completion, parse: Callable[[Completion], Any]
    ) -> tuple[Completion, Any]:
        """A batch answer: metered at batch prices, logged, parsed, and cached (the judge stage reads labels there);
        the answer cached first wins, as on the live path."""
        ref = self._ref(role)
        self.batch_meter.add(f"{role} (batch)", ref.model, completion)
        key = self.engine.key_for(ref, prompt, self._params(role))
        return self.engine.accept(role, ref, key, completion, parse)

    def _merge(self, job: JobRecord, status: JobStatus) -> None:
        api = self.apis[job.role]
        results = {result.custom_id: result for result in api.results(job, status)}
        wanted = {custom_id(sid): sid for sid in job.source_ids}
        elsewhere = self._open_ids(exclude=job)  # after a crash mid-merge, some items are in newer jobs
        again = _JobBuilder(self, job.role, job.round + 1)
        judge = _JobBuilder(self, "judge")
        found: set[str] = set()
        for item in iter_items(self.input_path, self.input_field):
            sid = item.source_id
            if wanted.get(custom_id(sid)) != sid or sid in found:
                continue
            found.add(sid)
            if sid in self._written or sid in elsewhere:
                continue
            started = self._begin(item)
            if started is None:
                continue
            text, outcome = started
            result = results.get(custom_id(sid)) or RequestResult(
                custom_id=custom_id(sid),
                error=f"batch {job.id} ended {status.status} without a result for it",
                ran=status.status not in ("expired", "cancelled"),
            )
            if job.role == "annotator":
                self._merge_label(job, item, text, outcome, result, again, judge)
            else:
                self._merge_verdict(job, item, text, outcome, result, again)
        for sid in set(wanted.values()) - found - self._written - elsewhere:
            self._write_record(
                BulkRecord(
                    source_id=sid,
                    model_version=self.labeler.model_version,
                    error=f"task {sid}: no longer in {self.input_path}; its batch answer is dropped",
                )
            )
        again.flush()
        judge.flush()
        job.merged = True
        self.state_file.save(self.state)

    def _unrun(self, job: JobRecord, result: RequestResult, sid: str, prompt: str, again: _JobBuilder) -> bool:
        """Resubmit a request its batch ended without running, within the allowed rounds."""
        if result.ran or job.round >= self.options.resubmit_unrun:
            return False
        if again.add(sid, prompt, self._params(job.role)) is not None:
            return False
        self.summary.resubmitted += 1
        return True

    def _merge_label(
        self,
        job: JobRecord,
        item: Item,
        text: str,
        outcome: LabelOutcome,
        result: RequestResult,
        again: _JobBuilder,
        judge: _JobBuilder,
    ) -> None:
        sid = item.source_id
        prompt = self.labeler.annotator_prompt(text)
        if result.completion is None:
            if not self._unrun(job, result, sid, prompt, again):
                self._write(self.labeler.failed(item.task, f"annotator call failed: {result.error}"), sid)
            return
        try:
            _, outcome.label = self._accept("annotator", prompt, result.completion, self.labeler.parse_label)
        except ValueError as first:
            self.summary.live_retries += 1
            try:
                outcome.label = self.engine.run(self.labeler.annotate_again(prompt, first))
            except ProviderError as error:
                self._write(self.labeler.failed(item.task, f"annotator call failed: {error}"), sid)
                return
            if self.labeler.uses_judge:  # the live label may not be cached (PRELABEL_CACHE=0): judge it live
                self.engine.run(self.labeler.rate(self.labeler.judge_prompt(text, outcome.label), outcome))
            self._write(outcome, sid)
            return
        self._to_judge(sid, text, outcome, judge)

    def _merge_verdict(
        self, job: JobRecord, item: Item, text: str, outcome: LabelOutcome, result: RequestResult, again: _JobBuilder
    ) -> None:
        sid = item.source_id
        prompt_in = self.labeler.annotator_prompt(text)
        cached = self.engine.store.cached_completion(
            self.engine.key_for(self.engine.annotator_ref, prompt_in, self.labeler.annotator_params)
        )
        try:
            outcome.label = self.labeler.parse_label(cached) if cached is not None else None
        except ValueError:
            outcome.label = None
        if outcome.label is None:
            self._write(
                self.labeler.failed(
                    item.task,
                    "the annotator's answer is no longer in the call cache (was MODEL_DIR changed?); "
                    "rerun to label it again",
                ),
                sid,
            )
            return
        prompt = self.labeler.judge_prompt(text, outcome.label)
        if result.completion is None:
            if not self._unrun(job, result, sid, prompt, again):
                outcome.unrated_reason = f"judge call failed: {result.error}"
                self._write(outcome, sid)
            return
        try:
            completion, verdict = self._accept("judge", prompt, result.completion, parse_judge)
        except JudgeParseError as first:
            self.summary.live_retries += 1
            self.engine.run(self.labeler.rate(prompt, outcome, earlier=first))
        else:
            self.labeler.accept_verdict(outcome, completion, verdict)
        self._write(outcome, sid)

    # -- the output -------------------------------------------------------------------------------------

    def _write(self, outcome: LabelOutcome, sid: str) -> None:
        self._write_record(BulkRecord.from_outcome(sid, outcome))

    def _write_record(self, record: BulkRecord) -> None:
        assert self._writer is not None
        self._writer.write(record.line())
        self._written.add(record.source_id)
        summary = self.summary
        if record.error is not None:
            summary.failed += 1
            if len(summary.failures) < MAX_LISTED_FAILURES:
                summary.failures.append(f"{record.source_id}: {record.error}")
        else:
            summary.labeled += 1
            summary.unrated += record.unrated_reason is not None
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    done=summary.labeled + summary.failed,
                    labeled=summary.labeled,
                    failed=summary.failed,
                    unrated=summary.unrated,
                    tokens=self.batch_meter.tokens + (self.meter.tokens if self.meter else 0),
                    cost_usd=self._cost(),
                )
            )

    def _usage(self) -> list[RoleUsage]:
        return self.batch_meter.roles() + (self.meter.roles() if self.meter else [])

    def _cost(self) -> float | None:
        costs = [self.batch_meter.cost_usd] + ([self.meter.cost_usd] if self.meter else [])
        return None if any(cost is None for cost in costs) else sum(c for c in costs if c is not None)


def refuse_jury(settings: Settings) -> None:
    """BatchError when PRELABEL_JUDGE names a jury: the Batch API path has one judge stage."""
    if len(settings.judges) > 1:
        raise BatchError(
            f"PRELABEL_JUDGE lists {len(settings.judges)} judges ({settings.prelabel_judge}), but --batch-api rates "
            "with one judge: label with the jury without --batch-api (live calls), or name a single judge"
        )


def label_file_batch(
    settings: Settings,
    config: LabelConfig,
    input_path: Path,
    output: Path,
    *,
    options: BatchOptions | None = None,
    input_field: str | None = None,
    retry_failed: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    engine: Engine | None = None,
    meter: UsageMeter | None = None,
) -> BatchSummary:
    """Label every item of `input_path` not already in `output` through the providers' batch APIs.

    `engine` (with `meter` on its clients) serves the cache, the usage log and the live retries.
    """
    refuse_jury(settings)
    options = options or BatchOptions()
    meter = meter or UsageMeter(load_prices(settings.prelabel_prices))
    own_engine = engine is None
    engine = engine or build_engine(settings, meter)
    try:
        apis = {
            role: batch_api_for(settings, ref, options.limits_for(ref.provider), options.request_timeout_s)
            for role, ref in (("annotator", engine.annotator_ref), ("judge", engine.judge_ref))
        }
        run = BatchRun(
            engine,
            engine.labeler(config),
            input_path,
            output,
            input_field=input_field or config.data_key,
            options=options,
            apis=apis,
            meter=meter,
            batch_meter=UsageMeter(batch_prices(meter.prices)),
            retry_failed=retry_failed,
            on_progress=on_progress,
            on_event=on_event,
        )
        with interrupt_on_sigterm():
            return run.run()
    finally:
        flush = getattr(engine.store, "flush", None)
        if flush is not None:
            flush()
        if own_engine:
            close_engine(engine)
