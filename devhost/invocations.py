"""The console lines the Functions host writes per invocation, in its words.

`func start` logs every failed invocation as
`Executed 'Functions.<name>' (Failed, Id=<invocation id>, Duration=<n>ms)` followed by the
exception and its stack, and successful ones as `(Succeeded, ...)` at the verbose level. A
developer whose activity fails and is retried must see it on devhost too.
"""
from __future__ import annotations

import logging
import time
import traceback
import uuid

log = logging.getLogger("devhost.functions")


class Invocation:
    """One call of a user function: its id, its clock, and the line it leaves on the console."""

    def __init__(self, function_name: str, invocation_id: str | None = None):
        self.name = function_name
        self.id = invocation_id or str(uuid.uuid4())
        self._started = time.perf_counter()
        log.debug("Executing 'Functions.%s' (Reason='devhost', Id=%s)", self.name, self.id)

    def _duration_ms(self) -> int:
        return round((time.perf_counter() - self._started) * 1000)

    def succeeded(self) -> None:
        log.debug("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", self.name,
                  self.id, self._duration_ms())

    def failed(self, error: BaseException | str, stack: str | None = None) -> None:
        """Log the failure; `error` is the exception (its traceback is printed) or the error
        text the SDK reported (with `stack` when it carried one)."""
        if isinstance(error, BaseException):
            stack = "".join(traceback.format_exception(error)).rstrip()
            error = f"{type(error).__name__}: {error}"
        log.error("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)\n"
                  "Exception while executing function: Functions.%s. Result: Failure\n"
                  "Exception: %s%s", self.name, self.id, self._duration_ms(), self.name,
                  error, f"\nStack: {stack}" if stack else "")
