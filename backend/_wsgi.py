"""WSGI entry point: `gunicorn prelabel._wsgi:app` (the Label Studio ML backend convention's name)."""

from prelabel.app import create_app

app = create_app()
