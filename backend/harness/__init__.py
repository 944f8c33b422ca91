"""Code that starts processes for the demo, the tests and the benchmarks: a Label Studio server in its own
virtual environment, the local model server, the backend under gunicorn, and the demo itself.
Nothing in the library imports it."""
