"""The ML backend's reads of Label Studio for /webhook: an annotation (GET /api/annotations/{id}/) and a project's
label config (GET /api/projects/{id}/), with the backend's own token, over httpx.

Not through label-studio-sdk (prelabel.labelstudio): importing it costs each worker process about 110 MB and its
request pipeline tens of milliseconds a call, and a webhook must answer within Label Studio's 1 s. Tokens work as
the SDK takes them: a legacy token is sent as `Token <key>`; a personal access token (a JWT refresh token) is
exchanged at /api/token/refresh/ for an access token sent as `Bearer <access>`, again when that one is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from typing import Any

import httpx


class LabelStudioError(RuntimeError):
    """Label Studio refused or could not be reached; the message says which call and what to do."""


def unreachable(url: str, what: str, error: Exception) -> LabelStudioError:
    """The error for a call that got no answer: a timeout, or no connection (with what to check)."""
    if isinstance(error, httpx.TimeoutException):
        return LabelStudioError(f"Label Studio at {url} did not answer in time ({what})")
    return LabelStudioError(
        f"Label Studio at {url} is not reachable ({what}): {type(error).__name__}. "
        "Is it running, and is LABEL_STUDIO_URL right?"
    )


def is_personal_access_token(key: str) -> bool:
    """A JWT whose payload says it is a refresh token (what Label Studio hands out as a personal access token)."""
    parts = key.split(".")
    if len(parts) != 3:
        return False
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(payload, dict) and payload.get("token_type") == "refresh"


CONFIG_TTL = 30.0  # seconds a project's label config is reused: a burst of reviews reads it once


class LabelStudioReads:
    """One per process; thread-safe. Every call makes one attempt within `timeout` seconds."""

    def __init__(self, url: str, api_key: str, timeout: float):
        self._configs: dict[int, tuple[float, str]] = {}
        self.url = url.rstrip("/")
        self._key = api_key
        self._personal = is_personal_access_token(api_key)
        self._access: str | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout)

    def annotation(self, annotation_id: int) -> dict[str, Any] | None:
        """Label Studio's record of the annotation, None when it has none (404)."""
        return self._get(f"/api/annotations/{int(annotation_id)}/", "read the annotation", missing_ok=True)

    def label_config(self, project_id: int) -> str:
        """The project's label config as Label Studio holds it (read again after CONFIG_TTL seconds)."""
        cached = self._configs.get(int(project_id))
        if cached and time.monotonic() - cached[0] < CONFIG_TTL:
            return cached[1]
        project = self._get(f"/api/projects/{int(project_id)}/", "read the project's label config")
        config = project.get("label_config") if project else None
        if not config:
            raise LabelStudioError(f"project {project_id}: Label Studio returned no label config")
        self._configs[int(project_id)] = (time.monotonic(), str(config))
        return str(config)

    def _get(self, path: str, what: str, missing_ok: bool = False) -> dict[str, Any] | None:
        response = self._request(path, what, fresh_token=False)
        if response.status_code == 401 and self._personal:  # the access token expired: exchange again, once
            response = self._request(path, what, fresh_token=True)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise self._refused(what, response)
        try:
            data = response.json()
        except ValueError:
            raise LabelStudioError(f"Label Studio answered {what} with something that is not JSON") from None
        if not isinstance(data, dict):
            raise LabelStudioError(f"Label Studio answered {what} with JSON that is not an object")
        return data

    def _request(self, path: str, what: str, fresh_token: bool) -> httpx.Response:
        try:
            return self._http.get(self.url + path, headers=self._authorization(what, fresh_token))
        except httpx.TransportError as error:  # timeouts included
            raise unreachable(self.url, what, error) from None

    def _authorization(self, what: str, fresh: bool) -> dict[str, str]:
        if not self._personal:
            return {"Authorization": f"Token {self._key}"}
        with self._lock:
            if self._access is None or fresh:
                self._access = self._exchange(what)
            return {"Authorization": f"Bearer {self._access}"}

    def _exchange(self, what: str) -> str:
        """An access token for the personal access token (Label Studio's /api/token/refresh/)."""
        try:
            response = self._http.post(f"{self.url}/api/token/refresh/", json={"refresh": self._key})
        except httpx.TimeoutException:
            raise LabelStudioError(f"Label Studio at {self.url} did not answer in time ({what})") from None
        except httpx.TransportError as error:
            raise LabelStudioError(
                f"Label Studio at {self.url} is not reachable ({what}): {type(error).__name__}"
            ) from None
        if response.status_code >= 400:
            raise self._refused(f"{what} (exchanging the personal access token)", response)
        try:
            access = response.json().get("access")
        except (ValueError, AttributeError):
            access = None
        if not access:
            raise LabelStudioError("Label Studio's token exchange returned no access token")
        return str(access)

    @staticmethod
    def _refused(what: str, response: httpx.Response) -> LabelStudioError:
        hint = " Check LABEL_STUDIO_API_KEY." if response.status_code in (401, 403) else ""
        body = " ".join(response.text.split())[:300]
        return LabelStudioError(f"Label Studio refused to {what} (HTTP {response.status_code}): {body}.{hint}")
