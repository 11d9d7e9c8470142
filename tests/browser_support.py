"""Shared by the real-browser tests: Debian's chromium (installed when missing) and a headless JupyterLab.

Playwright's own browser download does not work on these machines, so the tests launch Debian's
chromium (``app.serve.CHROMIUM``) with ``app.serve.CHROMIUM_ARGS``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the app's package `app` lives at the repo root
    sys.path.insert(0, str(REPO))
from app.serve import CHROMIUM, free_port  # noqa: E402


def ensure_chromium() -> str | None:
    """None when chromium is at ``CHROMIUM`` (installing Debian's package if missing), else the reason."""
    if Path(CHROMIUM).exists():
        return None
    if shutil.which("apt-get") is None:
        return "no chromium at /usr/bin/chromium and no apt-get to install it"
    if os.geteuid() != 0:
        return "no chromium at /usr/bin/chromium and not root, so apt-get cannot install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], env=env, check=False, capture_output=True, timeout=300)
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return "apt-get install chromium timed out"
    if done.returncode != 0 or not Path(CHROMIUM).exists():
        return f"apt-get install chromium failed: {done.stderr.strip()[-500:]}"
    return None


def screenshot_dir(default: Path) -> Path:
    """``$WORKBENCH_SCREENSHOTS`` (kept as test artifacts) or ``default``; created."""
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", default))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path, scratch: Path, timeout: float = 120) -> Iterator[str]:
    """A headless JupyterLab serving ``root`` on a free localhost port, kernels on the data home ``home``.

    Settings, workspaces and runtime files go to ``scratch`` so the user's own JupyterLab state is
    neither read nor changed. Yields the server's URL.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for sub in ("settings", "workspaces", "runtime", "config"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    # Render every cell: JupyterLab 4 leaves cells outside the viewport out of the page by default.
    tracker = scratch / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text('{"windowingMode": "none"}')
    # Without jupytext's contents manager: it writes a paired .py next to each opened notebook, and the
    # notebook changing on disk makes JupyterLab ask questions.
    (scratch / "config" / "jupyter_server_config.json").write_text(
        '{"ServerApp": {"jpserver_extensions": {"jupyterlab_jupytext": false}}}'
    )
    env = {
        **os.environ,
        "WORKBENCH_HOME": str(home),
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
        "JUPYTER_CONFIG_DIR": str(scratch / "config"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        f"--port={port}", "--ip=127.0.0.1",
        "--ServerApp.token=", "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={scratch / 'settings'}",
        f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log = (scratch / "jupyterlab.log").open("w")
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log_path = scratch / "jupyterlab.log"
                raise RuntimeError(f"jupyterlab exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyterlab did not answer at {url} within {timeout} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
