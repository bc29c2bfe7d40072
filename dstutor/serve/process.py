"""Start the server (and a Redis server) as real processes on loopback, from a notebook, a test or a benchmark."""
from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Process:
    """A child process that is stopped when the `with` block ends (or on stop())."""

    process: subprocess.Popen | None = None

    def __enter__(self):
        return self.start()

    def _launch(self, args: list[str], **popen) -> None:
        self.process = subprocess.Popen(args, **popen)
        atexit.register(self.stop)  # a notebook that fails half-way still leaves no server behind

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ServerProcess(_Process):
    """`dstutor serve` in a subprocess on a free loopback port; waits until /health answers."""

    def __init__(self, model: str | Path, port: int | None = None, max_batch: int = 8, max_wait_ms: float = 10,
                 cache_size: int = 1024, redis_url: str | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "dstutor", "serve", "--model", str(model), "--port", str(self.port),
                     "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--cache-size", str(cache_size)]
        self.args += ["--redis-url", redis_url] if redis_url else []
        self.log = log

    def start(self, timeout_s: float = 120) -> "ServerProcess":
        out = open(self.log, "w") if self.log else subprocess.DEVNULL
        self._launch(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode} before answering"
                                   + (f"; its log: {self.log}" if self.log else " (pass log=PATH to see why)"))
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the server did not answer /health within {timeout_s} s")


class RedisProcess(_Process):
    """A real redis-server (Debian's package) on a free loopback port, without persistence."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20) -> "RedisProcess":
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed: `apt-get install redis-server` "
                                    "(make test installs it where apt-get is available)")
        self._launch([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                     stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"redis-server did not listen on port {self.port} within {timeout_s} s")
