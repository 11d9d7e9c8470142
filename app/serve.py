"""Start the dashboard as a real server, for the browser test and the render benchmark.

Both drive it with Playwright and Debian's chromium; the flags keep chromium off this machine's closed
network and give it software WebGL, which plotly's Scattergl needs headless.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from app.binding import ADDRESS

APP = Path(__file__).resolve().parent / "streamlit_app.py"
REPO = APP.parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-unsafe-swiftshader",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((ADDRESS, 0))
        return sock.getsockname()[1]


def streamlit_command(port: int, address: str = ADDRESS) -> list[str]:
    """The command line that serves the dashboard headless on ``address:port``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", address,
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout} s")


@contextlib.contextmanager
def serve(home: Path, cwd: Path, timeout: float = 120, address: str = ADDRESS) -> Iterator[str]:
    """Serve the dashboard on the data home ``home`` from a free port; yields its URL on 127.0.0.1.

    ``address`` is the bind address (another one only to check that the pages then refuse to show).
    """
    port = free_port()
    url = f"http://{ADDRESS}:{port}"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        streamlit_command(port, address),
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_server(url, proc, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
