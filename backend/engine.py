"""The engine: one per process, built here for every command and for the ML backend.

`Engine` holds the provider clients, the store (the call cache and the usage log) and one thread pool that
bounds concurrency, and checks the annotator and judge families once, before any call. `build_engine` is the
one way the commands and the web app get it: its clients report usage to a meter and wait for the roles' rate
limits, shared by every process using the same MODEL_DIR. `engine.labeler(config)` gives the per-project
`Labeler` (prelabel.pipeline).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from prelabel.costs import MeteredClient, UsageMeter
from prelabel.families import ModelRef, check_families
from prelabel.faults import RunStopped
from prelabel.label_interface import LabelConfig
from prelabel.pipeline import Labeler, LabelOutcome
from prelabel.prompts import PromptSet
from prelabel.providers import CallParams, Completion, LLMClient, ProviderError, make_client
from prelabel.ratelimit import limited
from prelabel.settings import Settings
from prelabel.store import BatchedLogStore, Store, cache_key

log = logging.getLogger("prelabel")

Parsed = TypeVar("Parsed")
Result = TypeVar("Result")


class CacheMiss(Exception):
    """In cache-only mode, a call the cache cannot answer (deliberately not a ValueError or ProviderError, so
    no retry or error handling in the labeler takes it for a bad answer)."""


class Engine:
    """Process-wide state: provider clients, the store, one thread pool that bounds concurrency."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        annotator_client: LLMClient | None = None,
        judge_client: LLMClient | None = None,
    ):
        self.settings = settings
        self.annotator_ref: ModelRef = settings.annotator
        self.judge_ref: ModelRef = settings.judge
        # Raises SameFamilyError at start, before any call is made.
        self.family_warning = check_families(self.annotator_ref, self.judge_ref, settings.prelabel_allow_same_family)
        if self.family_warning:
            log.warning(self.family_warning)
        self.store = store or Store(settings.store_path)
        client_options: dict[str, Any] = dict(
            openai_api_key=settings.openai_api_key,
            anthropic_api_key=settings.anthropic_api_key,
            openai_base_url=settings.openai_base_url,
            anthropic_base_url=settings.anthropic_base_url,
            timeout=settings.prelabel_timeout,
            max_retries=settings.prelabel_max_retries,
        )
        self.annotator = annotator_client or make_client(self.annotator_ref, **client_options)
        self.judge = judge_client or make_client(self.judge_ref, **client_options)
        self._pool = ThreadPoolExecutor(max_workers=settings.prelabel_concurrency, thread_name_prefix="prelabel")
        self._labelers: dict[str, Labeler] = {}
        self._in_flight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._cache_only = threading.local()  # .hits: the deferred cache-hit log rows, set in cache-only mode
        self._stop_reason: str | None = None

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

    def call(
        self,
        role: str,
        client: LLMClient,
        prompt: str,
        params: CallParams,
        parse: Callable[[Completion], Parsed],
        read_cache: bool = True,
    ) -> tuple[Completion, Parsed]:
        """One LLM call through the cache. Only answers that parse are cached, so a retry asks afresh.

        Identical calls in flight at once in this process wait for the first one instead of repeating it.
        """
        ref = client.ref
        key = self.key_for(ref, prompt, params)
        use_cache = self.settings.prelabel_cache
        cache_only = getattr(self._cache_only, "hits", None) is not None
        if use_cache and read_cache:
            hit = self._cached(role, ref, key, parse)
            if hit is not None:
                return hit
            if cache_only:
                raise CacheMiss(key)
            with self._lock:
                leader = self._in_flight.get(key)
                if leader is None:
                    self._in_flight[key] = threading.Event()
            if leader is not None:
                leader.wait(self.settings.prelabel_timeout * (self.settings.prelabel_max_retries + 1))
                hit = self._cached(role, ref, key, parse)
                if hit is not None:
                    return hit
                return self._call_provider(role, client, key, prompt, params, parse)  # the first one failed
            try:
                return self._call_provider(role, client, key, prompt, params, parse)
            finally:
                with self._lock:
                    self._in_flight.pop(key).set()
        if cache_only:
            raise CacheMiss(key)
        return self._call_provider(role, client, key, prompt, params, parse)

    def from_cache(self, work: Callable[[], Result]) -> Result | None:
        """`work` answered from the cache alone, or None as soon as it would need a provider call.

        Its cache hits are logged only when it succeeds, so falling back to the normal path never counts a
        hit twice. Bulk runs use it to finish cached items at once instead of handing them to a worker.
        """
        hits: list[dict[str, Any]] = []
        self._cache_only.hits = hits
        try:
            result = work()
        except CacheMiss:
            return None
        finally:
            self._cache_only.hits = None
        for row in hits:
            self.store.log_call(**row)
        return result

    @staticmethod
    def key_for(ref: ModelRef, prompt: str, params: CallParams) -> str:
        """The cache key of one call."""
        return cache_key(ref.provider, ref.model, ref.base_url, params.cache_fields(), prompt)

    def cached(
        self, role: str, ref: ModelRef, prompt: str, params: CallParams, parse: Callable[[Completion], Parsed]
    ) -> tuple[Completion, Parsed] | None:
        """A cached answer that still parses (logged as a cache hit), or None."""
        return self._cached(role, ref, self.key_for(ref, prompt, params), parse)

    def _cached(
        self, role: str, ref: ModelRef, key: str, parse: Callable[[Completion], Parsed]
    ) -> tuple[Completion, Parsed] | None:
        hit = self.store.cached_completion(key)
        if hit is None:
            return None
        try:
            parsed = parse(hit)
        except ValueError:
            return None  # an entry that no longer parses (e.g. a changed label set): ask again
        row: dict[str, Any] = dict(role=role, provider=ref.provider, model=ref.model, key=key, completion=hit)
        deferred = getattr(self._cache_only, "hits", None)
        if deferred is None:
            self.store.log_call(**row)
        else:
            deferred.append(row)
        return hit, parsed

    def _call_provider(
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
            completion = client.complete(prompt, params)
        except ProviderError as error:
            self.store.log_call(
                role=role, provider=ref.provider, model=ref.model, key=key, completion=None, error=str(error)
            )
            raise
        return self.accept(role, ref, key, completion, parse, save=self.settings.prelabel_cache)

    def accept(
        self,
        role: str,
        ref: ModelRef,
        key: str,
        completion: Completion,
        parse: Callable[[Completion], Parsed],
        save: bool,
    ) -> tuple[Completion, Parsed]:
        """Log a provider's answer, parse it (ValueError for the caller) and, if it parses and `save`, cache it.

        When another process cached an answer for the same call meanwhile, that one is returned instead, so
        every worker serves the same label for the same input. An answer the store cannot save (disk full,
        read-only MODEL_DIR, anything) is still returned: it was paid for. The store's fault is then set, so
        the engine makes no further paid call.
        """
        self.store.log_call(role=role, provider=ref.provider, model=ref.model, key=key, completion=completion)
        parsed = parse(completion)
        if save:
            try:
                earlier = self.store.save_completion(key, ref.provider, ref.model, completion)
                if earlier is not None:
                    try:
                        return earlier, parse(earlier)
                    except ValueError:
                        self.store.replace_completion(key, ref.provider, ref.model, completion)
            except Exception as error:
                self.store.note_fault(error)
        return completion, parsed

    def run_batch(
        self, labeler: Labeler, tasks: list[dict[str, Any]], deadline_s: float | None = None
    ) -> list[LabelOutcome]:
        """Label tasks concurrently; answers in input order. Tasks unfinished at the deadline fail."""
        futures: list[Future[LabelOutcome]] = [self._pool.submit(labeler.label_task, task) for task in tasks]
        wait(futures, timeout=deadline_s)
        outcomes = []
        for task, future in zip(tasks, futures):
            if future.done():
                outcomes.append(future.result())
            else:
                future.cancel()  # not started: frees the slot; started: finishes and fills the cache
                outcomes.append(
                    labeler.failed(task, f"not finished within the {deadline_s:.0f} s deadline of this request")
                )
        return outcomes

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def build_engine(
    settings: Settings,
    meter: UsageMeter | None = None,
    clients: tuple[LLMClient, LLMClient] | None = None,
    *,
    store: Store | None = None,
) -> Engine:
    """The Engine of every command and of the ML backend: its clients report usage to `meter` and wait for
    the roles' rate limits (PRELABEL_<ROLE>_RPM/TPM), whose budget every process using this MODEL_DIR
    shares: the backend's workers and `prelabel label` runs draw on one.

    `store` defaults to the usage log batched for bulk runs; the backend and short commands pass a plain
    `Store`, whose rows are written at once.
    """
    store = store or BatchedLogStore(settings.store_path)
    try:
        engine = Engine(
            settings,
            store=store,
            annotator_client=clients[0] if clients else None,
            judge_client=clients[1] if clients else None,
        )
    except Exception:
        close_store(store)  # e.g. a same-family judge: no writer thread left behind
        raise
    shared_dir = rate_limit_dir(settings)

    def wrap(client: LLMClient, role: str) -> LLMClient:
        if meter is not None:
            client = MeteredClient(client, role, meter)
        return limited(client, role, settings, shared_dir)

    engine.annotator = wrap(engine.annotator, "annotator")
    engine.judge = wrap(engine.judge, "judge")
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
