"""Apps under a real uvicorn on a free loopback port, for real HTTP: in a
thread of the test process (:func:`serve`), or in a subprocess
(:class:`UvicornProcess`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from conftest import free_port


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread (lifespan on); yields its base URL;
    shuts it down (lifespan shutdown included) on exit."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_config=None, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited before it started")
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "uvicorn did not stop"


class UvicornProcess:
    """``uvicorn --app-dir <dir> <app>`` in a subprocess (this venv's
    Python), with ``env`` added to the environment; its output in ``log``."""

    def __init__(self, app_dir: Path, app: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = [
            sys.executable, "-m", "uvicorn",
            "--app-dir", str(app_dir), app,
            "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while "Application startup complete" not in self.output():
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start: {self.output()}")
            time.sleep(0.05)
        httpx.get(self.url + "/openapi.json", timeout=10).raise_for_status()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown, lifespan included), SIGKILL after 10 s."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
