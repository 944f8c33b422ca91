"""The live calls' HTTP transport: aiohttp, driven directly, with every policy decision left to the SDK client.

Why not the SDK's own async request path: at 1,000 calls in flight its per-call work (request option models, a
deep copy of the body, header and URL objects around the transport's own) costs ~1.1 ms of CPU per call even on
its aiohttp transport, and ~3.5 ms on the default one, against ~0.25 ms here (docs/design/async-engine.md has
the measurements). What the SDK owns stays the SDK's, read from the SDK client object of the same version:
the headers it sends (`default_headers`, `auth_headers`), which answers are retried (`_should_retry`:
408/409/429/5xx, `x-should-retry`, a Retry-After too long), how long to wait (`_calculate_retry_timeout`:
Retry-After / retry-after-ms, else exponential backoff with jitter) and the error classes raised
(`_make_status_error_from_response`, `APITimeoutError`, `APIConnectionError`). Those are private methods:
the SDK versions are pinned, and tests/integration/test_http_transport.py checks each rule against a fake
provider, so an upgrade that changes them fails there. `PRELABEL_HTTP=sdk` switches the live calls to the SDK's
own request path (same answers, more CPU) should a future SDK break this one.

Timeouts are per phase, as the SDK's are: connecting, and each wait for the next bytes of the answer, may take
up to `timeout` seconds; a provider that is slow but answering is never cut off by a total.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from typing import Any

import pydantic_core

log = logging.getLogger("prelabel")

# The SDK's own request path (PRELABEL_HTTP=sdk) is given the body already serialized, with this option.
JSON_CONTENT: Any = {"headers": {"Content-Type": "application/json"}}


def json_bytes(body: dict[str, Any]) -> bytes:
    """A request body serialized once, as UTF-8 JSON (pydantic-core's encoder: a third of json.dumps's time)."""
    return pydantic_core.to_json(body)


class _Answer:
    """What the SDK's retry policy reads of an answer: its status and (case-insensitive) headers."""

    __slots__ = ("status_code", "headers")

    def __init__(self, status_code: int, headers: Any):
        self.status_code, self.headers = status_code, headers


class _RetryBudget:
    """The `options` argument of the SDK's `_calculate_retry_timeout`: only its retry budget is read."""

    def __init__(self, max_retries: int):
        self.max_retries = max_retries

    def get_max_retries(self, default: int) -> int:
        return self.max_retries


class FastPost:
    """POSTs JSON bodies to one provider with aiohttp, the SDK client `sdk` deciding retries, waits and errors.

    One aiohttp session (opened on first use, on the engine's loop) keeps every idle connection alive: the
    SDKs' default pools keep 100, so at higher concurrency most calls would open a new connection (and, on a
    real endpoint, a TLS handshake). The number of calls in flight is bounded by the engine, not here.
    """

    def __init__(self, sdk: Any, timeout: float, max_retries: int):
        self._sdk = sdk
        self._base = str(sdk.base_url).rstrip("/")
        headers = {**sdk.default_headers, **sdk.auth_headers}
        self._headers = {name: value for name, value in headers.items() if isinstance(value, str)}
        self._timeout = timeout
        self._retries = _RetryBudget(max_retries)
        self._errors = importlib.import_module(type(sdk).__module__.split(".")[0])  # openai or anthropic
        self._session: Any = None
        self._proxy: dict[str, Any] = {}

    def _open(self) -> Any:
        import aiohttp
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        # HTTP(S)_PROXY and NO_PROXY, as the SDK's own transport honours them, read once for the one endpoint:
        # aiohttp's trust_env would look them up (and netrc) in a worker thread on every call.
        try:
            proxy, proxy_auth = get_env_proxy_for_url(URL(self._base))
            self._proxy = {"proxy": proxy, "proxy_auth": proxy_auth}
        except LookupError:
            self._proxy = {}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=self._timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried between calls
            headers=self._headers,
        )
        return self._session

    async def post(self, path: str, body: bytes) -> Any:
        """The answer's JSON (ValueError when it is not JSON), or the SDK's error once its retries are spent."""
        import aiohttp

        session = self._session or self._open()
        url = self._base + path
        remaining = self._retries.max_retries
        while True:
            try:
                async with session.post(url, data=body, **self._proxy) as response:
                    raw = await response.read()
                    if response.status < 300:
                        if log.isEnabledFor(logging.DEBUG):
                            log.debug("POST %s: HTTP %d, %d bytes", url, response.status, len(raw))
                        return json.loads(raw)
                    if remaining > 0 and self._sdk._should_retry(_Answer(response.status, response.headers)):
                        delay = self._sdk._calculate_retry_timeout(remaining, self._retries, response.headers)
                        remaining -= 1
                        log.debug("POST %s: HTTP %d, retrying in %.2f s", url, response.status, delay)
                        await asyncio.sleep(delay)
                        continue
                    log.debug("POST %s: HTTP %d, not retried", url, response.status)
                    raise self._status_error(url, response.status, response.headers, raw)
            except (TimeoutError, aiohttp.ClientError) as failure:
                if remaining > 0:
                    delay = self._sdk._calculate_retry_timeout(remaining, self._retries, None)
                    remaining -= 1
                    log.debug("POST %s: %s, retrying in %.2f s", url, type(failure).__name__, delay)
                    await asyncio.sleep(delay)
                    continue
                raise self._connection_error(url, isinstance(failure, TimeoutError)) from None

    def _status_error(self, url: str, status: int, headers: Any, raw: bytes) -> Exception:
        import httpx2

        response = httpx2.Response(
            status, headers=list(headers.items()), content=raw, request=httpx2.Request("POST", url)
        )
        error: Exception = self._sdk._make_status_error_from_response(response)
        return error

    def _connection_error(self, url: str, timed_out: bool) -> Exception:
        import httpx2

        request = httpx2.Request("POST", url)
        error: Exception = (
            self._errors.APITimeoutError(request=request)
            if timed_out
            else self._errors.APIConnectionError(request=request)
        )
        return error

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
