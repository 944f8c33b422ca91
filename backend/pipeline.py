"""The labeling pipeline: input -> annotator -> judge, per task.

`engine.labeler(config)` (prelabel.engine) gives the per-project `Labeler` that knows the task kind and the
prompts; it makes its calls through the engine's cache and clients, awaited on the engine's loop. `Labeler.label`
never raises: every failure becomes an outcome with an error that names the task and the field, so one bad task
never sinks a batch. The flow has one owner, this module: a fully cached item is answered by driving the same
coroutine from the cache alone (`label_from_cache`), and the Batch API runner awaits its steps through the
engine's blocking `run`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prelabel.dialogue import InputError, parse_dialogue, parse_text, render_dialogue, truncate
from prelabel.faults import RunStopped
from prelabel.judge import (
    JUDGE_SCHEMA_NAME,
    LEVELS,
    JudgeParseError,
    Verdict,
    expected_level,
    judge_schema,
    parse_verdict,
)
from prelabel.label_interface import LabelConfig
from prelabel.prompts import PromptSet, render
from prelabel.providers import CallParams, Completion, ProviderError

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.families import ModelRef
    from prelabel.providers import LLMClient

log = logging.getLogger("prelabel")

# How an item's rating can be missing. The first two pass (a rate limit, a 5xx, a timeout, a lost connection,
# a run stopped by a fault): a rerun asks the judge again. An answer that did not parse twice stays unrated.
JUDGE_FAILED = "judge call failed"
JUDGE_NOT_ASKED = "judge not asked: the run stopped"
JUDGE_UNPARSED = "judge answer did not parse twice"
TRANSIENT_UNRATED = (JUDGE_FAILED, JUDGE_NOT_ASKED)


def unrated_is_transient(reason: str | None) -> bool:
    """Whether an unrated reason (of this run or read back from an output line) is worth asking again."""
    return reason is not None and reason.startswith(TRANSIENT_UNRATED)


class JurorVerdict(BaseModel):
    """One juror's part in a jury's verdict: its level (None when it gave none, with the reason why)."""

    model: str  # the juror's provider:model
    level: int | None = None
    expected_level: float | None = None  # G-Eval where its log-probs exist, else its level
    reason: str | None = None
    unrated_reason: str | None = None

    @property
    def name(self) -> str:
        """The model's name without its provider, as the reviewer reads it."""
        return self.model.partition(":")[2] or self.model


def juror_verdict(ref: ModelRef, part: LabelOutcome) -> JurorVerdict:
    """One juror's outcome as its part in the jury."""
    verdict = part.verdict
    if verdict is None:
        return JurorVerdict(model=ref.spec, unrated_reason=part.unrated_reason)
    expected = verdict.expected_level if verdict.expected_level is not None else float(verdict.level)
    return JurorVerdict(model=ref.spec, level=verdict.level, expected_level=expected, reason=verdict.reason)


def jury_summary(jury: list[JurorVerdict], disagreement: int | None) -> str:
    """How the reviewer reads a jury: "jury: claude-haiku-4-5 good, llama-3.1-8b bad (spread 2)."."""
    levels = ", ".join(f"{j.name} {LEVELS[j.level] if j.level is not None else 'unrated'}" for j in jury)
    spread = f" (spread {disagreement})" if disagreement is not None else ""
    return f"jury: {levels}{spread}."


def aggregate(jury: list[JurorVerdict]) -> Verdict | None:
    """The jury's verdict from the jurors that rated: the median level (the lower median for an even count: the
    stricter of the two middle levels), the mean of their expected levels (G-Eval where log-probs exist, else
    their levels) as the expected level, so score = mean / 4, and their reasons, each after its model's name."""
    rated = [juror for juror in jury if juror.level is not None]
    if not rated:
        return None
    levels = sorted(juror.level for juror in rated if juror.level is not None)
    expected = [
        juror.expected_level if juror.expected_level is not None else float(juror.level or 0) for juror in rated
    ]
    return Verdict(
        level=levels[(len(levels) - 1) // 2],
        reason=" | ".join(f"{juror.name}: {juror.reason or '-'}" for juror in rated),
        expected_level=round(sum(expected) / len(expected), 4),
    )


class LabelOutcome(BaseModel):
    """The result of labeling one task. `error` set means no label; `unrated_reason` set means no rating.

    With a jury (several judges), `verdict` is the jury's aggregate, `jury` every juror's part in PRELABEL_JUDGE's
    order and `disagreement` the spread of their levels (max - min); with one judge both stay empty."""

    task_id: Any = None
    model_version: str
    label: str | None = None
    verdict: Verdict | None = None
    unrated_reason: str | None = None
    judge_raw: str | None = None
    error: str | None = None
    truncated: bool = False
    warnings: list[str] = []
    jury: list[JurorVerdict] = []
    disagreement: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.label is not None

    @property
    def score(self) -> float | None:
        return self.verdict.score if self.verdict else None


class Labeler:
    """Labels the tasks of one label config with one prompt version."""

    def __init__(self, engine: Engine, config: LabelConfig, prompts: PromptSet):
        self.engine = engine
        self.config = config
        self.prompts = prompts
        settings = engine.settings
        # Classification is judged only when the config has somewhere to show the rating.
        self.uses_judge = config.kind == "summarization" or config.rates
        self.model_version = prompts.model_version(
            engine.annotator_ref, engine.judge_refs if self.uses_judge else None, bool(engine.family_warning)
        )
        labels = config.class_labels
        self.annotator_params = CallParams(
            max_tokens=settings.prelabel_annotator_max_tokens,
            temperature=settings.prelabel_temperature,
            schema_name="choose_label" if labels else None,
            json_schema=_label_schema(labels) if labels else None,
        )
        # One set of parameters per juror: log-probs are asked of OpenAI-compatible jurors only.
        self.juror_params = [
            CallParams(
                max_tokens=settings.prelabel_judge_max_tokens,
                temperature=settings.prelabel_temperature,
                schema_name=JUDGE_SCHEMA_NAME,
                json_schema=judge_schema(settings.prelabel_judge_reason_max_chars),
                logprobs=settings.prelabel_judge_logprobs and ref.provider == "openai",
            )
            for ref in engine.judge_refs
        ]
        self.judge_params = self.juror_params[0]

    def failed(self, task: Any, error: str) -> LabelOutcome:
        task_id = task.get("id") if isinstance(task, dict) else None
        return LabelOutcome(task_id=task_id, model_version=self.model_version, error=f"task {task_id}: {error}")

    def read_input(self, task: Any) -> tuple[str, bool]:
        """The task's input as the prompts show it, and whether it was truncated."""
        if not isinstance(task, dict):
            raise InputError("task", f"must be an object, not {type(task).__name__}")
        data = task.get("data", task)
        if not isinstance(data, dict):
            raise InputError("data", f"must be an object, not {type(data).__name__}")
        key = self.config.data_key
        if key not in data:
            raise InputError(f"data.{key}", "is missing")
        if self.config.kind == "summarization":
            text = render_dialogue(parse_dialogue(data[key], f"data.{key}"))
        else:
            text = parse_text(data[key], f"data.{key}")
        return truncate(text, self.engine.settings.prelabel_max_input_chars)

    def label_task(self, task: Any) -> LabelOutcome:
        """`label`, waited for: for callers outside the engine's loop."""
        return self.engine.label_task(self, task)

    async def label(self, task: Any, read: tuple[str, bool] | None = None) -> LabelOutcome:
        """The task labeled and rated. Never raises. `read`: its `read_input`, when the caller has it already."""
        try:
            text, truncated = read if read is not None else self.read_input(task)
            return await self._label(task, text, truncated)
        except InputError as error:
            return self.failed(task, f"bad input: {error}")
        except ProviderError as error:
            return self.failed(task, f"annotator call failed: {error}")
        except RunStopped as stopped:
            return self.failed(task, f"not attempted: the run stopped: {stopped}")
        except Exception as error:  # a bug must not sink the batch; it is logged with its traceback
            log.exception("unexpected error labeling task %s", task.get("id") if isinstance(task, dict) else None)
            return self.failed(task, f"internal error: {type(error).__name__}: {error}")

    def readable(self, task: Any) -> tuple[str, bool] | None:
        """`read_input`, or None for a task it refuses (`label` then reports why, naming the field)."""
        try:
            return self.read_input(task)
        except InputError:
            return None

    def label_from_cache(self, task: Any, read: tuple[str, bool]) -> LabelOutcome | None:
        """The outcome when every call it needs is already cached, else None (`label` then does the work and
        reports any error the usual way). `read`: the task's `read_input`."""
        try:
            return self.engine.answer_from_cache(self._label(task, *read))
        except Exception:  # anything unexpected: label reports it with the task
            return None

    def begin(self, task: Any) -> tuple[str, LabelOutcome]:
        """The task's input text and an outcome holding its warnings (InputError for a bad task)."""
        text, truncated = self.read_input(task)
        return text, self._outcome(task, truncated)

    def _outcome(self, task: Any, truncated: bool) -> LabelOutcome:
        outcome = LabelOutcome(task_id=task.get("id"), model_version=self.model_version, truncated=truncated)
        if truncated:
            outcome.warnings.append(f"input truncated to {self.engine.settings.prelabel_max_input_chars} characters")
        if self.engine.family_warning:
            outcome.warnings.append(self.engine.family_warning)
        return outcome

    async def _label(self, task: Any, text: str, truncated: bool) -> LabelOutcome:
        outcome = self._outcome(task, truncated)
        outcome.label = await self._annotate(text)
        if self.uses_judge:
            await self.rate(self.judge_prompt(text, outcome.label or ""), outcome)
        return outcome

    def annotator_prompt(self, text: str) -> str:
        """The rendered annotator prompt for one input (few-shot labelers add examples here)."""
        return render(self.prompts.annotator, input=text, labels=self.config.class_labels)

    def judge_prompt(self, text: str, label: str) -> str:
        return render(self.prompts.judge, input=text, label=label)

    def parse_label(self, completion: Completion) -> str:
        """The annotator's answer as a label (ValueError when it is unusable)."""
        if self.config.class_labels:
            return self._parse_class_label(completion)
        return _parse_free_text(completion)

    async def _annotate(self, text: str) -> str:
        prompt = self.annotator_prompt(text)
        try:
            _, label = await self.engine.call(
                "annotator", self.engine.annotator, prompt, self.annotator_params, self.parse_label
            )
        except ValueError as first:
            label = await self.annotate_again(prompt, first)
        return label

    async def annotate_again(self, prompt: str, first: Exception) -> str:
        """The second and last try after an unusable answer, asked afresh (ProviderError if unusable again)."""
        try:
            _, label = await self.engine.call(
                "annotator", self.engine.annotator, prompt, self.annotator_params, self.parse_label, read_cache=False
            )
        except ValueError as second:
            raise ProviderError(f"unusable answer twice: {first}; then {second}") from None
        return label

    def _parse_class_label(self, completion: Completion) -> str:
        text = completion.text.strip()
        try:
            value = json.loads(text)
            answer = value.get("label") if isinstance(value, dict) else value
        except json.JSONDecodeError:
            answer = text
        if isinstance(answer, str):
            for label in self.config.class_labels:
                if answer.strip().strip("\"'.").lower() == label.lower():
                    return label
        raise ValueError(f"answer {answer!r} is not one of the labels {self.config.class_labels}")

    async def rate(self, prompt: str, outcome: LabelOutcome, earlier: JudgeParseError | None = None) -> None:
        """Ask the judge (twice at most); `earlier` is a first answer that did not parse, so one try is left.
        With a jury every juror is asked (at once, each through the cache), and the outcome gets their aggregate."""
        if len(self.engine.judge_refs) == 1:
            await self.rate_with(self.engine.judge, self.judge_params, prompt, outcome, earlier)
            return
        await self._rate_jury(prompt, outcome, earlier)

    async def _rate_jury(self, prompt: str, outcome: LabelOutcome, earlier: JudgeParseError | None) -> None:
        refs, clients = self.engine.judge_refs, self.engine.jurors
        parts = [LabelOutcome(model_version=outcome.model_version) for _ in refs]
        asks = [
            self.rate_with(client, params, prompt, part, earlier if i == 0 else None)
            for i, (client, params, part) in enumerate(zip(clients, self.juror_params, parts))
        ]
        if self.engine.cache_only():
            # Driven by hand, without a loop: one after the other, each a cache hit or a miss (CacheMiss), after
            # which the jurors not yet asked are closed, never left unawaited.
            for index, ask in enumerate(asks):
                try:
                    await ask
                except BaseException:
                    for rest in asks[index + 1 :]:
                        rest.close()
                    raise
        else:
            done = await asyncio.gather(*asks, return_exceptions=True)
            failure = next((result for result in done if isinstance(result, BaseException)), None)
            if failure is not None:
                raise failure
        self.accept_jury(outcome, refs, parts)

    @staticmethod
    def accept_jury(outcome: LabelOutcome, refs: list[ModelRef], parts: list[LabelOutcome]) -> None:
        """The jurors' outcomes as the item's: their aggregate verdict, each one's part, their spread; a juror
        that gave no rating is left out and named in a warning; unrated only when none rated."""
        outcome.jury = [juror_verdict(ref, part) for ref, part in zip(refs, parts)]
        raws = [f"{ref.spec}: {part.judge_raw}" for ref, part in zip(refs, parts) if part.judge_raw is not None]
        outcome.judge_raw = "\n".join(raws) or None
        levels = [juror.level for juror in outcome.jury if juror.level is not None]
        outcome.verdict = aggregate(outcome.jury)
        outcome.disagreement = max(levels) - min(levels) if levels else None
        if outcome.verdict is not None:
            for juror in outcome.jury:
                if juror.level is None:
                    outcome.warnings.append(f"juror {juror.model} left out of the jury: {juror.unrated_reason}")
        else:
            # A passing failure first, so a rerun asks the jury again (unrated_is_transient reads the start).
            reasons = sorted(
                (f"{juror.unrated_reason} ({juror.model})" for juror in outcome.jury),
                key=lambda reason: not unrated_is_transient(reason),
            )
            outcome.unrated_reason = "; ".join(reasons)

    async def rate_with(
        self,
        client: LLMClient,
        params: CallParams,
        prompt: str,
        outcome: LabelOutcome,
        earlier: JudgeParseError | None = None,
    ) -> None:
        """One judge asked (twice at most), its verdict or why there is none recorded on `outcome`."""
        errors: list[str] = []
        if earlier is not None:
            errors.append(str(earlier))
            outcome.judge_raw = getattr(earlier, "raw", None)
        for attempt in range(len(errors), 2):
            try:
                completion, verdict = await self.engine.call(
                    "judge", client, prompt, params, parse_judge, read_cache=attempt == 0
                )
            except ProviderError as error:
                outcome.unrated_reason = f"{JUDGE_FAILED}: {error}"
                return
            except RunStopped as stopped:
                outcome.unrated_reason = f"{JUDGE_NOT_ASKED}: {stopped}"
                return
            except JudgeParseError as error:
                errors.append(str(error))
                outcome.judge_raw = getattr(error, "raw", None)
                continue
            self.accept_verdict(outcome, completion, verdict)
            return
        outcome.unrated_reason = f"{JUDGE_UNPARSED}: " + " | ".join(errors)

    @staticmethod
    def accept_verdict(outcome: LabelOutcome, completion: Completion, verdict: Verdict) -> None:
        """Record a parsed verdict, weighted by the rating token's log-probabilities where they exist."""
        outcome.judge_raw = completion.text
        if completion.tokens and completion.top_logprobs:
            weighted = expected_level(completion.tokens, completion.top_logprobs)
            if weighted is not None:
                verdict = verdict.model_copy(
                    update={"expected_level": round(weighted[0], 4), "level_probabilities": weighted[1]}
                )
        outcome.verdict = verdict


def _parse_free_text(completion: Completion) -> str:
    text = completion.text.strip()
    if not text:
        raise ValueError("the annotator returned an empty answer")
    return text


def parse_judge(completion: Completion) -> Verdict:
    """The judge's verdict (JudgeParseError, carrying the raw answer, when it does not parse)."""
    try:
        return parse_verdict(completion.text)
    except JudgeParseError as error:
        error.raw = completion.text  # type: ignore[attr-defined]
        raise


def _label_schema(labels: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": labels}},
        "required": ["label"],
        "additionalProperties": False,
    }
