"""WSGI entry point: `gunicorn backend._wsgi:app` (the Label Studio ML backend convention's name)."""

from backend.app import create_app

app = create_app()
