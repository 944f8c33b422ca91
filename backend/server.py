"""Running the backend under gunicorn, from `prelabel serve` or the Dockerfile (prelabel._wsgi:app)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from prelabel._wsgi import app

        return app


def run_gunicorn(host: str, port: int, workers: int = 1, threads: int = 8) -> None:
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            # A worker holds no more connections than it has threads, so a request goes to a worker with a
            # free thread instead of queuing behind a busy one's long /predict while another idles. Without
            # spare connections keep-alive has nothing to hold them in: it is off.
            "worker_connections": threads,
            "keepalive": 0,
            # Longer than the predict deadline (85 s by default), shorter than nothing Label Studio waits for.
            "timeout": 120,
            "graceful_timeout": 10,
            "accesslog": "-",
            # The worker's pid on each line: with several workers, it tells which process answered.
            "access_log_format": '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms worker=%(p)s',
        }
    ).run()
