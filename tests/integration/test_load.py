"""The backend's load harness at a small size: several gunicorn workers and projects at once lose no task and
no webhook, and never give one item two labels. The figures themselves come from `make load`."""

from __future__ import annotations

from benchmarks.load import LoadConfig, run_load


def test_workers_and_projects_under_concurrent_load_lose_nothing():
    report = run_load(
        LoadConfig(
            workers=2,
            threads=4,
            projects=3,
            requests_per_project=6,
            tasks_per_request=5,
            pool_size=12,
            webhooks_per_project=15,
            latency=0.02,
            client_threads=8,
        )
    )
    assert report.errors == []
    assert report.predict_requests == 18 and report.tasks == 90 and report.tasks_without_result == 0
    assert report.webhooks_sent == report.webhooks_answered == report.webhooks_recorded == 45
    # The overlap is what makes consistency mean something: items were asked for by several requests.
    assert report.items_labeled_twice > 0 and report.inconsistent_items == 0
    assert report.peak_rss_worker_mb > 0  # the sampler saw the workers
