"""WSGI entry point `prelabel._wsgi:app` (the Label Studio ML backend convention's name), for a WSGI server of
your own. `prelabel serve` runs the same app behind prelabel.server's request buffering and read deadlines."""

from prelabel.app import create_app

app = create_app()
