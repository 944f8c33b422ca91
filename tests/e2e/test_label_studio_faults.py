"""Label Studio failing in the middle of a push, for real: a proxy in front of a real Label Studio lets the
import through and then loses the answer (as a dropped connection or a gateway timeout would). The push says so,
and running it again never creates a second task for the same item."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from prelabel.labelstudio import LabelStudioClient, LabelStudioError
from prelabel.push import SOURCE_ID_FIELD, push_round
from tests.conftest import DATA, SENTIMENT_CONFIG

pytestmark = pytest.mark.e2e

POOL = DATA / "sentiment" / "yelp.jsonl"


class LossyProxy:
    """Forwards every request to Label Studio; the first `lose` imports reach it but their answers become 502s."""

    def __init__(self, target: str, lose: int = 1):
        self.target = target.rstrip("/")
        self.lose = lose
        self.lost: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(
                    self.command,
                    proxy.target + self.path,
                    data=body,
                    headers=headers,
                    timeout=120,
                    allow_redirects=False,
                )
                if self.command == "POST" and self.path.split("?")[0].endswith("/import") and proxy.lose > 0:
                    proxy.lose -= 1
                    proxy.lost.append(self.path)
                    status, payload = 502, b'{"detail": "bad gateway"}'
                else:
                    status, payload = answer.status_code, answer.content
                self.send_response(status)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LossyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(label_studio) -> Iterator[LossyProxy]:
    with LossyProxy(label_studio.url) as running:
        yield running


def test_a_push_whose_import_answer_is_lost_reruns_without_duplicates(label_studio, ls_client, proxy):
    through_proxy = LabelStudioClient(proxy.url, label_studio.token, retry_wait=0.01)
    with pytest.raises(LabelStudioError, match=r"import tasks.*HTTP 502"):
        push_round(through_proxy, SENTIMENT_CONFIG, "lossy import", POOL, sample=6, seed=3)
    assert len(proxy.lost) == 1  # the import reached Label Studio; only its answer was lost

    second = push_round(through_proxy, SENTIMENT_CONFIG, "lossy import", POOL, sample=6, seed=3)
    assert len(second.task_ids) == 6

    tasks = ls_client.export(second.project_id)
    per_source = Counter(task["data"][SOURCE_ID_FIELD] for task in tasks)
    assert len(tasks) == 12 and max(per_source.values()) == 1  # both rounds landed, no item twice
    assert set(second.source_ids).isdisjoint(
        {task["data"][SOURCE_ID_FIELD] for task in tasks if task["id"] not in second.task_ids}
    )
