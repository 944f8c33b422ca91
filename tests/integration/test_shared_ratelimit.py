"""Client-side rate limits shared by the backend's workers: two workers answering concurrent /predict requests
stay, together, within one role's requests per minute at the fake provider."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from prelabel.harness.backend_process import serve_in_background
from prelabel.harness.labelstudio_server import free_port
from prelabel.ratelimit import TokenBucket
from tests.conftest import SUMMARY_CONFIG, ls_task

RPM = 60  # a one-request burst, then 59 a minute: about one call a second per role, for both workers together


@contextmanager
def prelabel_serve(log: Path, workers: int = 2, threads: int = 4) -> Iterator[str]:
    """`prelabel serve` (two workers) with the environment of the test; its access log goes to `log`."""
    with serve_in_background(free_port(), dict(os.environ), log, workers=workers, threads=threads) as backend:
        yield backend.url


def test_two_workers_share_one_requests_per_minute_budget(make_settings, provider, dialogsum, tmp_path):
    make_settings(PRELABEL_ANNOTATOR_RPM=str(RPM), PRELABEL_JUDGE_RPM=str(RPM), PRELABEL_CACHE="0")
    log = tmp_path / "gunicorn.log"
    requests_count, tasks_each = 6, 2
    with prelabel_serve(log) as url:

        def post(index: int) -> list[dict[str, Any]]:
            # distinct tasks per request: every one of them costs a call per role
            tasks = [ls_task(index * tasks_each + n, dialogsum[index * tasks_each + n]) for n in range(tasks_each)]
            body = {"tasks": tasks, "project": "5.1", "label_config": SUMMARY_CONFIG}
            return requests.post(f"{url}/predict", json=body, timeout=90).json()["results"]

        def workers() -> set[str]:
            return set(re.findall(r'"POST /predict HTTP/1\.1" 200 .* worker=<(\d+)>', log.read_text()))

        started = time.monotonic()
        with ThreadPoolExecutor(requests_count) as pool:
            answers = list(pool.map(post, range(requests_count)))
        # The kernel spreads connections over the workers' sockets by a hash of their ports: now and then every
        # one lands on the same worker. More requests on fresh connections, until the other one has answered.
        extra = 0
        while len(workers()) < 2 and extra < 10:
            answers.append(post(requests_count + extra))
            extra += 1
        elapsed = time.monotonic() - started
        requests_count += extra

    calls = requests_count * tasks_each
    assert all(len(answer) == tasks_each and all("result" in item for item in answer) for answer in answers)
    assert len(workers()) == 2, f"both workers must answer /predict to test sharing; log:\n{log.read_text()}"

    bucket = TokenBucket(RPM)
    for role, sdk in (("annotator", "openai"), ("judge", "anthropic")):
        assert len([r for r in provider.requests if r.provider == sdk]) == calls, role
        assert provider.peak_in_window(60.0, sdk) <= RPM
        # The test lasts well under a minute, so the minute's limit alone could not catch two budgets.
        # What one bucket allows in any shorter window is a full bucket plus that window's refill; two
        # workers each with a budget of their own would take about twice that. One call of slack, for
        # HTTP latency between the grant and the provider's clock.
        for window in (5.0, 10.0):
            allowed = int(bucket.capacity + bucket.rate * window) + 1
            assert provider.peak_in_window(window, sdk) <= allowed, (role, window)
    # and the budget is used, not starved: the calls take about as long as the limit makes them
    assert elapsed < (calls - bucket.capacity) / bucket.rate * 1.5 + 5
