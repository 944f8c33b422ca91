"""The engine: one per process, built here for every command and for the ML backend.

`Engine` holds the provider clients, the store (the call cache and the usage log) and one event loop
(prelabel.event_loop) on which every provider call runs, and checks the annotator and judge families once,
before any call. Calls are coroutines: thousands can be in flight in one process at about a quarter of a
millisecond of CPU each (docs/design/async-engine.md). Callers outside the loop (the CLI, the web face's request
threads, the Batch API runner) use the blocking facade: `run_batch`, `label_task` and `run`.

`build_engine` is the one way the commands and the web app get it: its clients wait for the roles' rate limits,
shared by every process using the same MODEL_DIR, and its meter counts every paid answer.
`engine.labeler(config)` gives the per-project `Labeler` (prelabel.pipeline).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prelabel.concurrency import clamp_to_rate_limits
from prelabel.costs import UsageMeter
from prelabel.event_loop import EngineLoop
from prelabel.families import ModelRef, check_jury
from prelabel.faults import RunStopped
from prelabel.label_interface import LabelConfig
from prelabel.pipeline import Labeler, LabelOutcome
from prelabel.prompts import PromptSet
from prelabel.providers import CallParams, Completion, LLMClient, ProviderError, make_client
from prelabel.ratelimit import limited
from prelabel.settings import Settings
from prelabel.store import BatchedLogStore, Store, StoreBusy, cache_key

log = logging.getLogger("prelabel")

Parsed = TypeVar("Parsed")
Result = TypeVar("Result")

# Set while a labeling flow is driven from the cache alone (Engine.answer_from_cache): the cache hits it logs
# once it succeeds. A context variable, so it belongs to that one drive and never to a call in flight beside it.
_CACHE_ONLY: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "prelabel_cache_only", default=None
)
# Set by a caller that wants to know which cache entries a labeling flow was answered from (the item memo of bulk
# runs, prelabel.labeling.memo): every call that returns a usable answer records its role's cache key there, and
# under `answer_slot` (role and model: one per juror of a jury) too.
ANSWER_KEYS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "prelabel_answer_keys", default=None
)


class CacheMiss(Exception):
    """In cache-only mode, a call the cache cannot answer (deliberately not a ValueError or ProviderError, so
    no retry or error handling in the labeler takes it for a bad answer)."""


class Engine:
    """Process-wide state: provider clients, the store, and the event loop the calls run on."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        annotator_client: LLMClient | None = None,
        judge_client: LLMClient | None = None,
        meter: UsageMeter | None = None,
        juror_clients: Sequence[LLMClient] | None = None,
    ):
        """`judge_client`: the (first) judge's client; `juror_clients`: every juror's, in PRELABEL_JUDGE's order."""
        self.settings = settings
        self.annotator_ref: ModelRef = settings.annotator
        # The judge, or the jurors of a jury (PRELABEL_JUDGE lists several); judge_ref is the first.
        self.judge_refs: list[ModelRef] = list(settings.judges)
        self.judge_ref: ModelRef = self.judge_refs[0]
        # Raises SameFamilyError at start, before any call is made, for the first juror of the annotator's family.
        self.family_warning, self.jury_warning = check_jury(
            self.annotator_ref, self.judge_refs, settings.prelabel_allow_same_family
        )
        if self.family_warning:
            log.warning(self.family_warning)
        if self.jury_warning:
            log.warning(self.jury_warning)
        self.store = store or Store(settings.store_path)
        client_options: dict[str, Any] = dict(
            openai_api_key=settings.openai_api_key,
            anthropic_api_key=settings.anthropic_api_key,
            openai_base_url=settings.openai_base_url,
            anthropic_base_url=settings.anthropic_base_url,
            timeout=settings.prelabel_timeout,
            max_retries=settings.prelabel_max_retries,
            transport=settings.prelabel_http,
        )
        self.annotator = annotator_client or make_client(self.annotator_ref, **client_options)
        clients = list(juror_clients or ())
        if judge_client is not None:
            clients[:1] = [judge_client]
        self.jurors: list[LLMClient] = [
            clients[i] if i < len(clients) else make_client(ref, **client_options)
            for i, ref in enumerate(self.judge_refs)
        ]
        self.meter = meter  # every answer a provider was paid for is counted here
        # At most this many calls in flight for run_batch and label_task (a bulk run sets its own, clamped alike).
        self.concurrency, self.concurrency_note = clamp_to_rate_limits(
            settings.prelabel_concurrency, {role: settings.rate_limits(role)[0] for role in ("annotator", "judge")}
        )
        if self.concurrency_note:
            log.warning("PRELABEL_CONCURRENCY: %s", self.concurrency_note)
        self._labelers: dict[str, Labeler] = {}
        self._in_flight: dict[str, asyncio.Future[None]] = {}  # touched on the loop only
        self._lock = threading.Lock()
        self._loop: EngineLoop | None = None  # started by the first call that needs it
        self._gate: asyncio.Semaphore | None = None  # made on the loop
        self._stop_reason: str | None = None

    @property
    def judge(self) -> LLMClient:
        """The (first) judge's client."""
        return self.jurors[0]

    @judge.setter
    def judge(self, client: LLMClient) -> None:
        self.jurors[0] = client

    # -- the loop and the blocking facade ----------------------------------------------------------------

    @property
    def loop(self) -> EngineLoop:
        with self._lock:
            if self._loop is None:
                self._loop = EngineLoop()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, Result], timeout: float | None = None) -> Result:
        """Run a coroutine on the engine's loop and wait for its result (from any thread but the loop's)."""
        return self.loop.run(coroutine, timeout)

    def run_batch(
        self, labeler: Labeler, tasks: list[dict[str, Any]], deadline_s: float | None = None
    ) -> list[LabelOutcome]:
        """Label tasks concurrently (at most `concurrency` in flight); answers in input order. Tasks
        unfinished at the deadline fail: those not started are dropped, those started finish in the background
        and fill the cache, so a retry of the request is answered from it."""
        return self.run(self.label_batch(labeler, tasks, deadline_s))

    def label_task(self, labeler: Labeler, task: Any) -> LabelOutcome:
        """One task, waited for (never raises: a failure is the outcome's error)."""
        return self.run(self.gated(labeler, task))

    async def label_batch(
        self, labeler: Labeler, tasks: list[dict[str, Any]], deadline_s: float | None = None
    ) -> list[LabelOutcome]:
        started = [False] * len(tasks)

        def starting(index: int) -> Callable[[], None]:
            return lambda: started.__setitem__(index, True)

        running = [asyncio.ensure_future(self.gated(labeler, task, starting(i))) for i, task in enumerate(tasks)]
        if not running:
            return []
        await asyncio.wait(running, timeout=deadline_s)
        outcomes = []
        for index, (task, future) in enumerate(zip(tasks, running)):
            if future.done():
                outcomes.append(future.result())
                continue
            if not started[index]:
                future.cancel()  # never sent: nothing paid for is lost
            assert deadline_s is not None
            late = f"not finished within the {deadline_s:.0f} s deadline of this request"
            outcomes.append(labeler.failed(task, late))
        return outcomes

    async def gated(self, labeler: Labeler, task: Any, on_start: Callable[[], None] | None = None) -> LabelOutcome:
        """`labeler.label(task)` once one of the engine's `concurrency` slots is free."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.concurrency)
        async with self._gate:
            if on_start is not None:
                on_start()
            return await labeler.label(task)

    def close(self) -> None:
        """Close the clients and stop the loop; calls still running (past a request's deadline) are cancelled."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def close_clients() -> None:
            for client in (self.annotator, *self.jurors):
                try:
                    await client.aclose()
                except Exception:  # a client that fails to close must not hide the run's own outcome
                    log.debug("closing %s failed", client.ref.spec, exc_info=True)

        loop.close(close_clients())

    # -- state ---------------------------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Make no further paid calls in this process: every later call raises RunStopped. The first reason
        is kept (one clear message naming the path, not a cascade)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
                log.error("stopping: %s", reason)

    @property
    def stop_reason(self) -> str | None:
        """Why this engine makes no more paid calls (None while it may): a stop() or a store that can no
        longer write."""
        return self._stop_reason or self.store.fault

    def prompts_for(self, kind: str) -> PromptSet:
        return PromptSet.load(
            kind,
            self.settings.prelabel_annotator_prompt,
            self.settings.prelabel_judge_prompt,
            self.settings.prelabel_prompt_name,
        )

    def labeler(self, config: LabelConfig, prompts: PromptSet | None = None) -> Labeler:
        """The labeler for a label config (cached per config and prompt version)."""
        prompts = prompts or self.prompts_for(config.kind)
        key = f"{config.xml}\x00{prompts.content_hash}\x00{prompts.name}"
        with self._lock:
            if key not in self._labelers:
                self._labelers[key] = Labeler(self, config, prompts)
            return self._labelers[key]

    # -- one call, on the loop -------------------------------------------------------------------------

    async def call(
        self,
        role: str,
        client: LLMClient,
        prompt: str,
        params: CallParams,
        parse: Callable[[Completion], Parsed],
        read_cache: bool = True,
    ) -> tuple[Completion, Parsed]:
        """One LLM call through the cache. Only answers that parse are cached, so a retry asks afresh.

        Identical calls in flight at once in this process wait for the first one instead of repeating it. In
        a drive from the cache alone (`answer_from_cache`) a miss raises CacheMiss and nothing is awaited.
        """
        ref = client.ref
        key = self.key_for(ref, prompt, params)
        cache_only = _CACHE_ONLY.get() is not None
        if self.settings.prelabel_cache and read_cache:
            hit = await self._cached_now(role, ref, key, parse, cache_only)
            if hit is not None:
                return hit
            if cache_only:
                raise CacheMiss(key)
            leader = self._in_flight.get(key)
            if leader is not None:
                try:
                    await asyncio.wait_for(
                        asyncio.shield(leader),
                        self.settings.prelabel_timeout * (self.settings.prelabel_max_retries + 1),
                    )
                except TimeoutError:
                    pass  # asked afresh below
                hit = await self._cached_now(role, ref, key, parse, False)
                if hit is not None:
                    return hit
                return await self._call_provider(role, client, key, prompt, params, parse)  # the first one failed
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._in_flight[key] = done
            try:
                return await self._call_provider(role, client, key, prompt, params, parse)
            finally:
                del self._in_flight[key]
                done.set_result(None)
        if cache_only:
            raise CacheMiss(key)
        return await self._call_provider(role, client, key, prompt, params, parse)

    def answer_from_cache(self, flow: Coroutine[Any, Any, Result]) -> Result | None:
        """The result of a labeling flow answered from the cache alone, or None as soon as it would need a
        provider call. The flow is driven by hand, in the caller's thread: with every call a cache hit it never
        suspends. Its cache hits are logged only when it succeeds, so falling back to the normal path never
        counts a hit twice. Bulk runs use it to finish cached items at once instead of scheduling them."""
        hits: list[dict[str, Any]] = []
        token = _CACHE_ONLY.set(hits)
        try:
            flow.send(None)
        except StopIteration as finished:
            result: Result = finished.value
        except CacheMiss:
            return None
        else:  # it awaited something: not a cache-only flow after all; the normal path does it
            flow.close()
            return None
        finally:
            _CACHE_ONLY.reset(token)
        for row in hits:
            self.store.queue_log_call(**row)
        return result

    @staticmethod
    def cache_only() -> bool:
        """Whether the running labeling flow is driven from the cache alone (nothing may be scheduled on a loop)."""
        return _CACHE_ONLY.get() is not None

    @staticmethod
    def key_for(ref: ModelRef, prompt: str, params: CallParams) -> str:
        """The cache key of one call."""
        return cache_key(ref.provider, ref.model, ref.base_url, params.cache_fields(), prompt)

    def cached(
        self, role: str, ref: ModelRef, prompt: str, params: CallParams, parse: Callable[[Completion], Parsed]
    ) -> tuple[Completion, Parsed] | None:
        """A cached answer that still parses (logged as a cache hit), or None. Blocking: for callers outside
        the loop (the Batch API runner)."""
        key = self.key_for(ref, prompt, params)
        return self._hit(role, ref, key, self.store.cached_completion(key), parse)

    async def _cached_now(
        self, role: str, ref: ModelRef, key: str, parse: Callable[[Completion], Parsed], cache_only: bool
    ) -> tuple[Completion, Parsed] | None:
        """A cache lookup on the loop: one indexed read (WAL readers never wait for the writer). Should another
        process hold a lock (a migration, WAL recovery), the read waits in a worker thread, never on the loop;
        a drive from the cache alone gives up instead."""
        try:
            hit = self.store.cached_completion(key, wait=False)
        except StoreBusy:
            if cache_only:
                raise CacheMiss(key) from None
            hit = await asyncio.to_thread(self.store.cached_completion, key)
        return self._hit(role, ref, key, hit, parse)

    def _hit(
        self, role: str, ref: ModelRef, key: str, hit: Completion | None, parse: Callable[[Completion], Parsed]
    ) -> tuple[Completion, Parsed] | None:
        if hit is None:
            return None
        try:
            parsed = parse(hit)
        except ValueError:
            return None  # an entry that no longer parses (e.g. a changed label set): ask again
        _note_answer(role, ref, key)
        row: dict[str, Any] = dict(role=role, provider=ref.provider, model=ref.model, key=key, completion=hit)
        deferred = _CACHE_ONLY.get()
        if deferred is None:
            self.store.queue_log_call(**row)
        else:
            deferred.append(row)
        return hit, parsed

    async def _call_provider(
        self,
        role: str,
        client: LLMClient,
        key: str,
        prompt: str,
        params: CallParams,
        parse: Callable[[Completion], Parsed],
    ) -> tuple[Completion, Parsed]:
        ref = client.ref
        reason = self.stop_reason
        if reason is not None:
            raise RunStopped(reason)
        try:
            completion = await client.complete(prompt, params)
        except ProviderError as error:
            self.store.queue_log_call(
                role=role, provider=ref.provider, model=ref.model, key=key, completion=None, error=str(error)
            )
            raise
        if self.meter is not None:
            self.meter.add(role, ref.model, completion)
        self.store.queue_log_call(role=role, provider=ref.provider, model=ref.model, key=key, completion=completion)
        parsed = parse(completion)  # ValueError for the caller: not cached, so a retry asks afresh
        _note_answer(role, ref, key)
        if not self.settings.prelabel_cache:
            return completion, parsed
        loop = asyncio.get_running_loop()
        written: asyncio.Future[tuple[Completion | None, BaseException | None]] = loop.create_future()

        def saved(earlier: Completion | None, error: BaseException | None) -> None:  # on the writer thread
            loop.call_soon_threadsafe(_settle, written, (earlier, error))

        self.store.save_completion_later(key, ref.provider, ref.model, completion, saved)
        # Awaited, not fire-and-forget: when another process cached an answer first, that one is served, so
        # every worker gives the same label for the same input.
        earlier, failure = await written
        if failure is not None:
            self.store.note_fault(failure)  # paid for: returned all the same; no further paid call is made
            return completion, parsed
        return self._prefer_earlier(key, ref, completion, parsed, earlier, parse)

    def accept(
        self,
        role: str,
        ref: ModelRef,
        key: str,
        completion: Completion,
        parse: Callable[[Completion], Parsed],
    ) -> tuple[Completion, Parsed]:
        """A provider's answer that came another way (a Batch API result): logged, parsed (ValueError for the
        caller) and, if it parses, cached (always: the batch runner's judge stage reads labels there). Blocking:
        for callers outside the loop.

        An answer the store cannot save (disk full, read-only MODEL_DIR, anything) is still returned: it was
        paid for. The store's fault is then set, so the engine makes no further paid call.
        """
        self.store.log_call(role=role, provider=ref.provider, model=ref.model, key=key, completion=completion)
        parsed = parse(completion)
        try:
            earlier = self.store.save_completion(key, ref.provider, ref.model, completion)
        except Exception as error:
            self.store.note_fault(error)
            return completion, parsed
        return self._prefer_earlier(key, ref, completion, parsed, earlier, parse)

    def _prefer_earlier(
        self,
        key: str,
        ref: ModelRef,
        completion: Completion,
        parsed: Parsed,
        earlier: Completion | None,
        parse: Callable[[Completion], Parsed],
    ) -> tuple[Completion, Parsed]:
        """The answer another process cached first for the same call, when it still parses; else this one
        (which then replaces an earlier entry that no longer parses)."""
        if earlier is None:
            return completion, parsed
        try:
            return earlier, parse(earlier)
        except ValueError:
            self.store.queue_replace_completion(key, ref.provider, ref.model, completion)
            return completion, parsed


def answer_slot(role: str, ref: ModelRef) -> str:
    """Where ANSWER_KEYS holds the key of one model's answer in a role (each juror of a jury has its own)."""
    return f"{role} {ref.provider}:{ref.model}@{ref.base_url or ''}"


def _note_answer(role: str, ref: ModelRef, key: str) -> None:
    answered = ANSWER_KEYS.get()
    if answered is not None:
        answered[role] = key
        answered[answer_slot(role, ref)] = key


def _settle(future: asyncio.Future[Result], value: Result) -> None:
    if not future.done():
        future.set_result(value)


def build_engine(
    settings: Settings,
    meter: UsageMeter | None = None,
    clients: tuple[LLMClient, ...] | None = None,
    *,
    store: Store | None = None,
) -> Engine:
    """The Engine of every command and of the ML backend: every paid answer is counted by `meter`, and its
    clients wait for the roles' rate limits (PRELABEL_<ROLE>_RPM/TPM), whose budget every process using this
    MODEL_DIR shares: the backend's workers and `prelabel label` runs draw on one.

    `store` defaults to the usage log batched for bulk runs; the backend and short commands pass a plain
    `Store`, whose rows are written at once. `clients`: the annotator's, then every juror's.
    """
    store = store or BatchedLogStore(settings.store_path)
    try:
        engine = Engine(
            settings,
            store=store,
            annotator_client=clients[0] if clients else None,
            juror_clients=clients[1:] if clients else None,
            meter=meter,
        )
    except Exception:
        close_store(store)  # e.g. a same-family judge: no writer thread left behind
        raise
    shared_dir = rate_limit_dir(settings)
    engine.annotator = limited(engine.annotator, "annotator", settings, shared_dir)
    # Each juror waits for the judge's limits in a bucket of its own (the buckets are per model).
    engine.jurors = [limited(juror, "judge", settings, shared_dir) for juror in engine.jurors]
    return engine


def rate_limit_dir(settings: Settings) -> Path:
    """Where the shared rate-limit buckets live (beside the store)."""
    return settings.model_dir / "ratelimit"


def close_engine(engine: Engine) -> None:
    engine.close()
    close_store(engine.store)


def close_store(store: Store) -> None:
    """Write what the store has queued and stop its writer thread."""
    store.close()
