"""The one error of the local model harness, raised by the runtime, the model files and the server alike."""


class LocalModelError(RuntimeError):
    """The local runtime could not be installed, a model was not found, or the server failed."""
