"""A papermill engine that never waits on the kernel's shell channel without a timeout.

Why: with nbclient 0.11, jupyter_client 8, pyzmq 27 and ipykernel 7, a headless execution of a cell that
displays ipywidgets (``ipywidgets.interact``) sometimes never finishes. The kernel executes the cell,
publishes ``idle`` and sends its ``execute_reply``, but nbclient, which waits for that reply with
``shell_channel.get_msg(timeout=None)``, is never woken up: the asyncio poll on the shell socket misses
the message. Both processes then sit idle forever. Measured on notebook 01 (three ``interact`` cells):
5 of 10 papermill executions hung; with this engine, 0 of 30 (20 direct, 10 through ``run_notebook``).
The same symptom is reported upstream (jupyter/nbclient#312, nteract/papermill#723).

The fix: the client's shell channel polls in short intervals instead of blocking without a timeout, so
a reply whose wake-up was missed is picked up at the next interval. Timeouts the caller asks for are
kept as they are.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

from nbclient.util import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args

ENGINE_NAME = "workbench"
POLL_INTERVAL_S = 0.5


def poll_in_intervals(channel: Any, interval: float = POLL_INTERVAL_S) -> None:
    """Make ``channel.get_msg(timeout=None)`` poll every ``interval`` seconds instead of blocking."""
    blocking_get = channel.get_msg

    async def get_msg(timeout: float | None = None) -> dict[str, Any]:
        if timeout is not None:
            return await blocking_get(timeout=timeout)
        while True:
            try:
                return await blocking_get(timeout=interval)
            except Empty:
                continue

    channel.get_msg = get_msg


class PollingNotebookClient(PapermillNotebookClient):
    """papermill's notebook client with an interval-polling shell channel (module docstring)."""

    async def async_start_new_kernel_client(self):  # type: ignore[override]
        client = await super().async_start_new_kernel_client()
        poll_in_intervals(client.shell_channel)
        return client

    # nbclient binds the synchronous twin to the base class's coroutine, and papermill calls the twin.
    start_new_kernel_client = run_sync(async_start_new_kernel_client)


class PollingEngine(NBClientEngine):
    """papermill's default nbclient engine, executing with :class:`PollingNotebookClient`."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        **kwargs: Any,
    ) -> Any:
        # The same argument handling as NBClientEngine.execute_managed_notebook (papermill 2.x).
        kwargs = remove_args(["input_path"], **kwargs)
        safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
        final_kwargs = merge_kwargs(
            safe_kwargs,
            timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        return PollingNotebookClient(nb_man, **final_kwargs).execute()


def register() -> str:
    """Register the engine with papermill (idempotent); return its name for ``engine_name=``."""
    papermill_engines.register(ENGINE_NAME, PollingEngine)
    return ENGINE_NAME
