"""The azure.functions.Context handed to functions that declare a `context` parameter."""
from __future__ import annotations

import threading
import uuid

import azure.functions as func


class InvocationContext(func.Context):
    """What the Python worker passes: a fresh invocation id per call, the function's name."""

    def __init__(self, function_name: str, function_directory: str = "",
                 invocation_id: str | None = None):
        self._invocation_id = invocation_id or str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._tls = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self):
        return None

    @property
    def retry_context(self):
        return None

    @property
    def thread_local_storage(self):
        return self._tls
