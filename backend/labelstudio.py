"""Talking to a Label Studio server through label-studio-sdk: projects, tasks, the ML backend connection,
predictions and full exports. Works with a legacy token or a personal access token (the SDK refreshes it).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx
from label_studio_sdk.client import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.types import AllRolesProjectList, SerializationOptionRequest, SerializationOptionsRequest
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from prelabel.labelstudio_reads import LabelStudioError, unreachable

__all__ = ["LabelStudioClient", "LabelStudioError"]

log = logging.getLogger("prelabel")

REVIEWER_INSTRUCTION = (
    "<p>Each task is pre-filled by an LLM (the annotator) and rated by a second LLM of another family "
    "(the judge).</p><ol><li>Correct the label so that it is right and complete; leave it as it is if it "
    "already is.</li><li>Rate what the <b>LLM's</b> label deserved, before your correction, on your own "
    "reading: your rating starts empty and is required; the judge's rating and reason below it are "
    "read-only, to compare after you rate.</li>"
    "<li>Submit. Sort the Data Manager by <i>prediction score</i> to start from the weakest labels.</li></ol>"
)


PREDICT_ACTION_TIMEOUT = 200  # seconds; above Label Studio's own 100 s ML_TIMEOUT_PREDICT


Result = TypeVar("Result")


def _transient(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, ApiError) and (error.status_code or 0) >= 500


def _label_studio_call(what: str, idempotent: bool = False) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Turn SDK and network errors into a LabelStudioError that says which call failed and what to do.
    Calls that change nothing are retried on connection errors and 5xx; the others are not, so a retry
    never imports a task twice."""

    def decorate(method: Callable[..., Result]) -> Callable[..., Result]:
        def attempt(self: LabelStudioClient, *args: Any, **kwargs: Any) -> Result:
            if not idempotent:
                return method(self, *args, **kwargs)
            for trial in Retrying(
                retry=retry_if_exception(_transient),
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.retry_wait, max=8),
                reraise=True,
            ):
                with trial:
                    return method(self, *args, **kwargs)
            raise AssertionError("unreachable: tenacity reraises the last error")

        @functools.wraps(method)
        def wrapper(self: LabelStudioClient, *args: Any, **kwargs: Any) -> Result:
            try:
                return attempt(self, *args, **kwargs)
            except LabelStudioError:
                raise
            except httpx.TransportError as error:  # timeouts included
                raise unreachable(self.url, what, error) from None
            except ApiError as error:
                hint = " Check LABEL_STUDIO_API_KEY." if error.status_code in (401, 403) else ""
                body = " ".join(str(error.body).split())[:300]
                raise LabelStudioError(
                    f"Label Studio refused to {what} (HTTP {error.status_code}): {body}.{hint}"
                ) from None

        return wrapper

    return decorate


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, timeout: float = 60.0, attempts: int = 4, retry_wait: float = 0.5):
        if not url or not api_key:
            raise LabelStudioError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must both be set")
        self.url = url.rstrip("/")
        self.attempts = attempts
        self.retry_wait = retry_wait
        # The SDK would retry every method, imports included; prelabel retries only what changes nothing.
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0)

    # -- projects ------------------------------------------------------------------------------------

    def guarded(self, what: str, function: Callable[..., Result], *args: Any, idempotent: bool = False) -> Result:
        """`function(self, *args)` with this client's error messages (and retries, when it changes nothing):
        for callers that compose several SDK calls of their own."""
        return _label_studio_call(what, idempotent)(function)(self, *args)

    @_label_studio_call("list projects", idempotent=True)
    def find_project(self, title: str) -> Any | None:
        project: AllRolesProjectList
        for project in self.sdk.projects.list():
            if project.title == title:
                return project
        return None

    @_label_studio_call("list projects", idempotent=True)
    def project_id_for(self, reference: str) -> int:
        """The id of the project named by `reference`: its id, or its title as `push --project` took it.
        A number that is a project's id is that project; otherwise the one project with that title
        (LabelStudioError naming the candidates when none or several match)."""
        projects: list[tuple[int, str]] = []
        listed: AllRolesProjectList
        for listed in self.sdk.projects.list():
            if listed.id is not None:
                projects.append((int(listed.id), str(listed.title or "")))
        wanted = reference.strip()
        if wanted.isdigit() and any(pid == int(wanted) for pid, _ in projects):
            return int(wanted)
        matches = [pid for pid, title in projects if title == wanted]
        if len(matches) == 1:
            return matches[0]
        if matches:
            ids = ", ".join(map(str, sorted(matches)))
            raise LabelStudioError(f"several projects are titled {wanted!r} (ids {ids}): name one by its id")
        raise LabelStudioError(
            f"no project with the id or title {wanted!r} at {self.url} ({_closest_titles(wanted, projects)})"
        )

    @_label_studio_call("create the project")
    def ensure_project(self, title: str, label_config: str, description: str = "") -> Any:
        """The project with this title, created with the config if absent (the config is kept if present)."""
        project = self.find_project(title)
        if project is not None:
            return project
        return self.sdk.projects.create(
            title=title,
            label_config=label_config,
            description=description,
            expert_instruction=REVIEWER_INSTRUCTION,
            show_instruction=True,
        )

    @_label_studio_call("read the project", idempotent=True)
    def project(self, project_id: int) -> Any:
        return self.sdk.projects.get(id=project_id)

    def task_link(self, project_id: int, task_id: int) -> str:
        return f"{self.url}/projects/{project_id}/data?task={task_id}"

    # -- tasks ---------------------------------------------------------------------------------------

    def iter_tasks(self, project_id: int) -> Iterator[Any]:
        yield from self.sdk.tasks.list(project=project_id, fields="all", page_size=500)

    @_label_studio_call("list the project's tasks", idempotent=True)
    def task_data_values(self, project_id: int, field: str) -> set[str]:
        """Values of one data field over the project's tasks (e.g. the source ids already pushed)."""
        values = set()
        for task in self.iter_tasks(project_id):
            value = (task.data or {}).get(field)
            if value is not None:
                values.add(str(value))
        return values

    @_label_studio_call("import tasks")
    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]], batch_size: int = 1000) -> list[int]:
        """Import tasks (each may carry "predictions") and return the new task ids."""
        ids: list[int] = []
        for start in range(0, len(tasks), batch_size):
            # Plain dicts, sent as they are: the SDK's request models would copy and validate each task.
            response = self.sdk.projects.import_tasks(
                id=project_id,
                request=tasks[start : start + batch_size],  # type: ignore[arg-type]
                return_task_ids=True,
            )
            ids.extend(getattr(response, "task_ids", None) or [])
        return ids

    # -- the ML backend ------------------------------------------------------------------------------

    @_label_studio_call("connect the ML backend")
    def connect_backend(
        self,
        project_id: int,
        backend_url: str,
        title: str = "prelabel",
        basic_auth: tuple[str, str] | None = None,
        interactive: bool = False,
    ) -> Any:
        """Connect the ML backend to the project, reusing a connection to the same URL."""
        for backend in self.sdk.ml.list(project=project_id):
            if (backend.url or "").rstrip("/") == backend_url.rstrip("/"):
                return backend
        options: dict[str, Any] = {}
        if basic_auth:
            options = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]}
        return self.sdk.ml.create(
            project=project_id, url=backend_url, title=title, is_interactive=interactive, **options
        )

    @_label_studio_call("retrieve predictions")
    def retrieve_predictions(self, project_id: int, task_ids: Iterable[int] | None = None) -> None:
        """Ask Label Studio to get predictions from the connected backend (tasks that lack the current
        model_version's prediction)."""
        selected = {"all": False, "included": list(task_ids)} if task_ids is not None else {"all": True, "excluded": []}
        # Label Studio answers only after the backend's /predict returns (it waits up to 100 s).
        self.sdk.actions.create(
            id="retrieve_tasks_predictions",
            project=project_id,
            selected_items=selected,
            request_options={"timeout": PREDICT_ACTION_TIMEOUT, "max_retries": 0},
        )

    @_label_studio_call("read the ML backend", idempotent=True)
    def backend_model_version(self, project_id: int, backend_url: str) -> str | None:
        """The model_version the connected backend last answered to /setup."""
        for backend in self.sdk.ml.list(project=project_id):
            if (backend.url or "").rstrip("/") == backend_url.rstrip("/"):
                return backend.model_version or None
        return None

    @_label_studio_call("set the project's model_version", idempotent=True)
    def set_model_version(self, project_id: int, model_version: str) -> None:
        """Make the project's model_version the predictions' one: the Data Manager's prediction score (and so
        sorting by it) only counts predictions of the project's model_version."""
        self.sdk.projects.update(id=project_id, model_version=model_version)

    # -- annotations and exports ---------------------------------------------------------------------

    @_label_studio_call("export the project", idempotent=True)
    def export(self, project_id: int, title: str = "prelabel pull", timeout: float = 300.0) -> list[dict[str, Any]]:
        """Every task with its annotations and full predictions (not only their ids)."""
        snapshot = self.sdk.projects.exports.create(
            id=project_id,
            title=title,
            serialization_options=SerializationOptionsRequest(predictions=SerializationOptionRequest(only_id=False)),
        )
        if snapshot.id is None:
            raise LabelStudioError(f"project {project_id}: Label Studio created an export without an id")
        export_id = snapshot.id
        deadline = time.monotonic() + timeout
        while True:
            status = self.sdk.projects.exports.get(id=project_id, export_pk=export_id).status
            if status == "completed":
                break
            if status == "failed":
                raise LabelStudioError(f"project {project_id}: Label Studio failed to build the export")
            if time.monotonic() > deadline:
                raise LabelStudioError(f"project {project_id}: export not ready after {timeout:.0f} s")
            time.sleep(0.5)
        body = b"".join(self.sdk.projects.exports.download(id=project_id, export_pk=export_id, export_type="JSON"))
        tasks = json.loads(body)
        try:
            self.sdk.projects.exports.delete(id=project_id, export_pk=export_id)
        except Exception:  # a leftover snapshot is harmless; the data is already read
            log.debug("could not delete export snapshot %s", export_id)
        return tasks

    # -- the Data Manager's tabs (views) --------------------------------------------------------------

    @_label_studio_call("read the Data Manager's columns", idempotent=True)
    def data_manager_columns(self, project_id: int) -> list[dict[str, Any]]:
        """The project's Data Manager columns (id, parent "data" for task data fields, visibility_defaults)."""
        response = self.sdk._client_wrapper.httpx_client.request(
            "api/dm/columns/", method="GET", params={"project": project_id}
        )
        if response.status_code >= 400:
            raise ApiError(status_code=response.status_code, body=response.text)
        return list(response.json().get("columns") or [])

    @_label_studio_call("list the Data Manager's tabs", idempotent=True)
    def views(self, project_id: int) -> list[Any]:
        return list(self.sdk.views.list(project=project_id))

    @_label_studio_call("create a Data Manager tab")
    def create_view(self, project_id: int, data: dict[str, Any]) -> int:
        view = self.sdk.views.create(project=project_id, data=data)
        return int(view.id)

    @_label_studio_call("update a Data Manager tab", idempotent=True)
    def update_view(self, view_id: int, project_id: int, data: dict[str, Any]) -> None:
        self.sdk.views.update(id=str(view_id), project=project_id, data=data)


def _closest_titles(wanted: str, projects: list[tuple[int, str]], shown: int = 5) -> str:
    """The projects whose titles are nearest to what was asked (rapidfuzz), for the error that says none matched."""
    if not projects:
        return "the server has no projects"
    from rapidfuzz import fuzz, process

    titles = {f"{pid}: {title}": title for pid, title in projects}
    nearest = process.extract(wanted, titles, scorer=fuzz.WRatio, limit=shown)
    named = "; ".join(key for _, _, key in nearest)
    return f"nearest of {len(projects)}: {named}"
