"""The papermill engine that polls the shell channel in intervals (workbench.cli.engine)."""

from __future__ import annotations

import asyncio
from queue import Empty

import papermill
from papermill.engines import papermill_engines

from workbench.cli import engine as notebook_engine


class FakeChannel:
    """A shell channel whose message is ready only from the third poll on, like a missed wake-up."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    async def get_msg(self, timeout: float | None = None) -> dict:
        self.timeouts.append(timeout)
        if len(self.timeouts) < 3:
            raise Empty
        return {"msg": "reply"}


def test_blocking_gets_become_interval_polls():
    channel = FakeChannel()
    notebook_engine.poll_in_intervals(channel, interval=0.01)
    assert asyncio.run(channel.get_msg()) == {"msg": "reply"}
    assert channel.timeouts == [0.01, 0.01, 0.01]


def test_explicit_timeouts_are_kept():
    channel = FakeChannel()
    notebook_engine.poll_in_intervals(channel, interval=0.01)
    try:
        asyncio.run(channel.get_msg(timeout=2.0))
    except Empty:
        pass
    assert channel.timeouts == [2.0]


def test_engine_is_registered_and_patches_the_synchronous_client_start():
    assert notebook_engine.register() == "workbench"
    assert papermill_engines.get_engine("workbench") is notebook_engine.PollingEngine
    client = notebook_engine.PollingNotebookClient
    # papermill starts the kernel client through the synchronous twin, which must be ours
    assert (
        client.start_new_kernel_client
        is not papermill.clientwrap.PapermillNotebookClient.start_new_kernel_client
    )
