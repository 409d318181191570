"""Calls the app's functions, every trigger kind: the one place that knows sync vs async,
thread pools, bindings (the durable client, `context`), host.json's functionTimeout and the
host's per-invocation console lines (`Executed 'Functions.<name>' (Failed, Id=…, Duration=…ms)`
plus the exception and its stack; `(Succeeded, …)` at the verbose level), as `func start`
writes them.

Orchestrator and entity handles are CPU-only by the Durable programming model, so small
episodes run right on the loop (a thread hand-off costs more than they do); big replays and
user functions (activities, HTTP, timers) run in pools so the loop stays responsive.

With FUNCTIONS_WORKER_PROCESS_COUNT >= 2 (`attach_workers`), activities — and with
DEVHOST_WORKER_HANDLES also episodes and entity batches — run in worker processes
(workers.py); the console lines, failure details and functionTimeout stay here.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from . import protocol as p
from .calls import perform_http_call
from .config import HostConfig
from .context import InvocationContext
from .loader import AppIndex

log = logging.getLogger("devhost.invoker")
functions_log = logging.getLogger("devhost.functions")
INLINE_EVENTS_LIMIT = 400     # replays/batches up to this size run on the loop, bigger in threads
SLOW_HANDLE_SECONDS = 0.25


class Invoker:
    def __init__(self, index: AppIndex, config: HostConfig):
        self.index, self.cfg = index, config
        self.orchestrator_pool = ThreadPoolExecutor(config.max_orchestrators, "orchestrator")
        self.activity_pool = ThreadPoolExecutor(config.max_activities, "activity")
        self.entity_pool = ThreadPoolExecutor(config.max_entities, "entity")
        self.http_pool = ThreadPoolExecutor(16, "http")
        # (hub, connection) → durableClient binding JSON, for functions other than HTTP
        # triggers (those get one built from their request's own address)
        self._client_binding: Callable[[str | None, str | None], str] | None = None
        self.workers = None          # a workers.WorkerPool once attached
        self.remote_handles = False  # episodes and entity batches in the workers too

    def attach_workers(self, pool, handles: bool) -> None:
        """Send activities (and, with `handles`, episodes and batches) to worker processes."""
        self.workers, self.remote_handles = pool, handles

    def use_client_binding(self, make: Callable[[str | None, str | None], str]) -> None:
        """The HTTP layer knows devhost's addresses: it supplies the client binding maker."""
        self._client_binding = make

    def client_binding(self, hub: str | None, connection: str | None) -> str:
        return self._client_binding(hub, connection)

    def shutdown(self) -> None:
        for pool in (self.orchestrator_pool, self.activity_pool, self.entity_pool,
                     self.http_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        if self.workers is not None:
            self.workers.close()

    # -- the one way user code runs ---------------------------------------------------------

    async def _call(self, fn, kwargs: dict, is_async: bool, pool: ThreadPoolExecutor,
                    timeout: float | None) -> Any:
        """sync in a pool thread, async on the loop; both bounded by `timeout` (functionTimeout,
        or None in a worker process: there the host keeps the clock)."""
        # asyncio.timeout runs the coroutine in the caller's task (wait_for would wrap it in a
        # new task: one more trip through the loop's queue before and after every call)
        async with asyncio.timeout(timeout):
            if is_async:
                return await fn(**kwargs)
            return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(**kwargs))

    # -- orchestrators and entities ---------------------------------------------------------

    async def run_handle(self, pool: ThreadPoolExecutor, handle, document: str, size: int,
                         what: str) -> tuple[str | None, BaseException | None]:
        """An orchestrator or entity handle on its document: (returned JSON, raised)."""
        if size > INLINE_EVENTS_LIMIT:
            return await asyncio.get_running_loop().run_in_executor(
                pool, _call_handle, handle, document)
        started = time.perf_counter()
        outcome = _call_handle(handle, document)
        elapsed = time.perf_counter() - started
        if elapsed > SLOW_HANDLE_SECONDS:
            log.warning("%s took %.0f ms for one episode: orchestrator and entity code must "
                        "not block or do I/O (move that work into an activity)", what,
                        elapsed * 1000)
        return outcome

    async def run_orchestrator(self, name: str, handle, document: str, size: int) -> dict:
        """One episode: the OrchestratorState the SDK returned (with `error` on failure)."""
        invocation = Invocation(self.index.function_name(name))
        if self.remote_handles:
            answer, text = await self.workers.call(
                {"kind": "orchestrator", "name": name, "size": size}, document)
            result = json.loads(text) if answer.get("ok") else answer["result"]
            cause_traceback = answer.get("traceback")
        else:
            returned, raised = await self.run_handle(self.orchestrator_pool, handle, document,
                                                      size, f"orchestrator '{name}'")
            result, cause_traceback = orchestrator_outcome(returned, raised)
        if result.get("error") is None:
            invocation.succeeded()
        else:
            invocation.failed(result["error"], cause_traceback)
        return result

    async def replay_orchestrator(self, name: str, handle, document: str, size: int) -> dict:
        """A replay only to read the SDK's actions (rewind): not an invocation, so no console
        line, and its failure, if the code fails again, is just part of the state returned."""
        returned, raised = await self.run_handle(self.orchestrator_pool, handle, document,
                                                  size, f"orchestrator '{name}'")
        return p.parse_orchestrator_result(returned, raised)

    async def run_entity(self, name: str, scheduler_id: str, handle, document: str,
                         operations: list[dict], state: str | None
                         ) -> tuple[list[p.EntityResult], str | None]:
        """One batch: a result per operation (never fewer) and the entity's new state."""
        invocation = Invocation(self.index.function_name(name))
        if self.remote_handles:
            answer, returned = await self.workers.call(
                {"kind": "entity", "name": name, "size": len(operations)}, document)
            raised = answer.get("failure")
        else:
            returned, raised = await self.run_handle(self.entity_pool, handle, document,
                                                      len(operations), f"entity '{name}'")
            raised = raised and failure_details(raised)
        if raised is not None:
            invocation.failed(raised["error"], raised["stack"])
            return ([p.EntityResult(True, json.dumps(raised["message"])) for _ in operations],
                    state)
        results, exists, new_state = p.read_entity_batch_result(returned)
        if len(results) != len(operations):  # never leave a caller without an answer
            message = f"entity '{name}' answered {len(results)} of {len(operations)} operations"
            invocation.failed(message)
            return [p.EntityResult(True, json.dumps(message)) for _ in operations], state
        failures = [(op, r) for op, r in zip(operations, results) if r.is_error]
        for op, res in failures:
            invocation.failed(f"operation '{op['name']}' on entity '{scheduler_id}' failed: "
                              f"{p.decode_json_text(res.result)}")
        if not failures:
            invocation.succeeded()
        return results, new_state if exists else None

    # -- activities -------------------------------------------------------------------------

    async def run_activity(self, name: str, task_id: int, input_text: str | None) -> dict:
        """The TaskCompleted or TaskFailed event that answers one activity call."""
        invocation = None if name == p.HTTP_ACTIVITY_NAME else Invocation(name)
        try:
            if invocation is None:
                result_text = await perform_http_call(json.loads(input_text))
            else:
                result_text = await self._call_activity(name, input_text, invocation)
                invocation.succeeded()
            return p.task_completed(p.history_time(p.utcnow()), task_id, result_text)
        except RemoteFailure as exc:  # raised in a worker process: its details came back
            invocation.failed(exc.details["error"], exc.details["stack"])
            return p.task_failed(p.history_time(p.utcnow()), task_id,
                                 p.activity_failure_reason(name, exc.details["error"]),
                                 exc.details["user_traceback"])
        except Exception as exc:  # user code: any failure becomes TaskFailed
            if invocation is not None:
                invocation.failed(exc)
            else:
                log.warning("call_http failed: %s: %s", type(exc).__name__, exc)
            return p.task_failed(p.history_time(p.utcnow()), task_id,
                                 p.activity_failure_reason(name, exc), user_traceback(exc))

    async def _call_activity(self, name: str, input_text: str | None,
                             invocation: Invocation) -> str:
        activity = self.index.activity(name)
        if activity is None:
            raise LookupError(f"activity '{name}' is no longer registered")
        client = self.client_binding(activity.client_hub, activity.client_connection) \
            if activity.client_param else None
        if self.workers is None:
            return await self.call_activity_here(activity, input_text, client, invocation.id,
                                                 self.cfg.function_timeout)
        async with asyncio.timeout(self.cfg.function_timeout):
            return await self._activity_in_worker(activity, input_text, client, invocation.id)

    async def _activity_in_worker(self, activity, input_text: str | None, client: str | None,
                                  invocation_id: str) -> str:
        """At least once, as a redelivered activity message in Azure: a worker that died with
        the activity in flight (its result lost) is replaced and the activity runs again."""
        from .workers import WorkerDied
        message = {"kind": "activity", "name": activity.name, "client": client,
                   "invocation_id": invocation_id}
        while True:
            try:
                answer, text = await self.workers.call(message, input_text)
            except WorkerDied as exc:
                log.warning("activity '%s' (Id=%s) lost with its worker (%s): running it "
                            "again", activity.name, invocation_id, exc)
                continue
            if "failure" in answer:
                raise RemoteFailure(answer["failure"])
            return text

    async def call_activity_here(self, activity, input_text: str | None, client: str | None,
                                 invocation_id: str, timeout: float | None) -> str:
        """The activity in this process; its result as the JSON text the history stores."""
        value = ActivityTriggerConverter.decode(
            meta.Datum(type="string", value=input_text if input_text is not None else "null"),
            trigger_metadata=None)
        kwargs = {activity.input_param: value}
        if activity.client_param:
            kwargs[activity.client_param] = client
        if activity.wants_context:
            kwargs["context"] = InvocationContext(activity.name, invocation_id=invocation_id)
        result = await self._call(activity.fn, kwargs, activity.is_async, self.activity_pool,
                                  timeout)
        return ActivityTriggerConverter.encode(result, expected_type=None).value

    # -- HTTP and timer triggers ------------------------------------------------------------

    async def run_http(self, function, kwargs: dict, context: InvocationContext
                       ) -> tuple[bool, Any]:
        """(True, the function's return value) or (False, None) when it raised (logged)."""
        try:
            return True, await self.call_http(function, kwargs, context)
        except Exception:
            return False, None

    async def call_http(self, function, kwargs: dict, context: InvocationContext) -> Any:
        """The function's return value; what it raised is logged and re-raised (FastAPI mode
        answers it the way FastAPI does)."""
        return await self._invoke(function, kwargs, context, self.http_pool)

    async def run_mcp_tool(self, tool, kwargs: dict) -> Any:
        """An MCP tool trigger's call; re-raises what the function raised (the MCP endpoint
        answers it as a tool error) after logging it like any failed invocation."""
        self._bind_client(tool, kwargs)
        return await self._invoke(tool, kwargs, InvocationContext(tool.name), self.http_pool)

    async def run_timer(self, function, timer_request) -> None:
        kwargs = {function.timer_param: timer_request}
        self._bind_client(function, kwargs)
        try:
            await self._invoke(function, kwargs, InvocationContext(function.name),
                               self.activity_pool)
        except Exception:  # the user's code (logged): keep the schedule
            pass

    def _bind_client(self, function, kwargs: dict) -> None:
        if function.client_param:
            kwargs[function.client_param] = self.client_binding(function.client_hub,
                                                                function.client_connection)

    async def _invoke(self, function, kwargs: dict, context: InvocationContext,
                      pool: ThreadPoolExecutor) -> Any:
        """One logged invocation of an HTTP, MCP or timer function; re-raises its failure."""
        invocation = Invocation(function.name, context.invocation_id)
        if function.wants_context:
            kwargs["context"] = context
        try:
            result = await self._call(function.fn, kwargs, function.is_async, pool,
                                      self.cfg.function_timeout)
        except Exception as exc:
            invocation.failed(exc)
            raise
        invocation.succeeded()
        return result


class Invocation:
    """One call of a user function: its id, its clock, and the line it leaves on the console."""

    def __init__(self, function_name: str, invocation_id: str | None = None):
        self.name = function_name
        self.id = invocation_id or str(uuid.uuid4())
        self._started = time.perf_counter()
        functions_log.debug("Executing 'Functions.%s' (Reason='devhost', Id=%s)", self.name, self.id)

    def _duration_ms(self) -> int:
        return round((time.perf_counter() - self._started) * 1000)

    def succeeded(self) -> None:
        functions_log.debug("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", self.name,
                  self.id, self._duration_ms())

    def failed(self, error: BaseException | str, stack: str | None = None) -> None:
        """Log the failure; `error` is the exception (its traceback is printed) or the error
        text the SDK reported (with `stack` when it carried one)."""
        if isinstance(error, BaseException):
            stack = "".join(traceback.format_exception(error)).rstrip()
            error = f"{type(error).__name__}: {error}"
        functions_log.error("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)\n"
                  "Exception while executing function: Functions.%s. Result: Failure\n"
                  "Exception: %s%s", self.name, self.id, self._duration_ms(), self.name,
                  error, f"\nStack: {stack}" if stack else "")


class RemoteFailure(Exception):
    """A user function failed in a worker process: `details` as failure_details made them."""

    def __init__(self, details: dict):
        super().__init__(details["error"])
        self.details = details


def failure_details(exc: BaseException) -> dict:
    """What the console line and the failure records need from an exception, as JSON."""
    return {"error": f"{type(exc).__name__}: {exc}", "message": str(exc),
            "stack": "".join(traceback.format_exception(exc)).rstrip(),
            "user_traceback": user_traceback(exc)}


def orchestrator_outcome(returned: str | None, raised: BaseException | None
                         ) -> tuple[dict, str | None]:
    """The OrchestratorState, and the user's traceback when the orchestrator failed."""
    result = p.parse_orchestrator_result(returned, raised)
    cause = raised and (raised.__cause__ or raised.__context__)
    return result, user_traceback(cause) if cause and result.get("error") is not None else None


def user_traceback(exc: BaseException) -> str:
    """The failure's traceback without devhost's and asyncio's own frames (the details Azure
    records show the user's code, not the host's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not any(part in f.filename for part in _HOST_FRAMES)]
    return ("Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
            + "".join(traceback.format_exception_only(exc)))


_HOST_FRAMES = (f"{__package__}/", "/asyncio/", "/concurrent/futures/")


def _call_handle(handle, document: str) -> tuple[str | None, BaseException | None]:
    """Invoke an orchestrator/entity handle; hand back its text or the exception it raised."""
    try:
        return handle(document), None
    except Exception as exc:  # the SDK reports orchestrator failures by raising
        return None, exc
