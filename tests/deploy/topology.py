"""The compose stack's topology as local processes: every component in its own process group,
its output in a log file, and a stop that reaches every process it started, even on failure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Processes:
    """Started components by name; ``stop_all`` terminates their process groups (then kills)."""

    log_dir: Path
    started: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("w")
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()  # the child holds its own copy of the descriptor
        self.started[name] = process
        return process

    def check_alive(self, *, expected_to_exit: tuple[str, ...] = ()) -> None:
        """Fail early, naming the component, when one of them died."""
        for name, process in self.started.items():
            if name not in expected_to_exit and process.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop_all(self, grace: float = 20) -> None:
        for process in self.started.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        # Whatever is left in a group (Celery pool children, task supervisors) is killed.
        for process in self.started.values():
            _signal_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def wait_for(check: Callable[[], Any], timeout: float, what: str,
             alive: Callable[[], None] | None = None, interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; ``alive`` raises if a component died."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            result = check()
        except Exception as exc:  # not ready yet: connection refused, 404 while parsing, ...
            last_error, result = exc, None
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: "
                       f"{last_error!r})")
