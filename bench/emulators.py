"""Start the two emulators as subprocesses and steer them through their control routes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from identity_sync.emulators.serve import demo_connections

PROJECT = Path(__file__).resolve().parents[1]
CONTROL_TIMEOUT = 600  # seeding or diffing a 100,000-user state takes a while


@dataclass
class Emulator:
    """One emulator process and its base URL."""

    kind: str
    process: subprocess.Popen[str]
    base_url: str

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(method, f"{self.base_url}/_emulator/{path}",
                                timeout=CONTROL_TIMEOUT, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def calls(self) -> dict[str, int]:
        return dict(self.control("GET", "calls"))

    def reset_counters(self) -> None:
        self.control("DELETE", "calls")
        self.control("DELETE", "responses")

    def responses(self) -> dict[str, Any]:
        return dict(self.control("GET", "responses"))

    def set_latency(self, seconds: float) -> None:
        self.control("PUT", "faults", json={"latency": seconds})

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the server exits when its stdin closes
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                self.process.wait(timeout=10)


def launch_emulator(kind: str, *, users: int = 0, groups: int = 0, memberships: int = 0,
                    seed: int = 1) -> subprocess.Popen[str]:
    """Start ``python -m bench.emulator_server``; :func:`wait_ready` waits for its port."""
    cmd = [sys.executable, "-m", "bench.emulator_server", kind, "--users", str(users),
           "--groups", str(groups), "--memberships", str(memberships), "--seed", str(seed)]
    return subprocess.Popen(cmd, cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def wait_ready(kind: str, process: subprocess.Popen[str]) -> Emulator:
    """The emulator once it printed its port (seeding L takes ~20 s)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"{kind} emulator failed to start (exit {process.returncode})")
    port = json.loads(line)["port"]
    return Emulator(kind, process, f"http://127.0.0.1:{port}")


@dataclass
class EmulatorPair:
    idcs: Emulator
    bitbucket: Emulator

    def connections(self) -> dict[str, dict[str, Any]]:
        """Airflow connections (JSON form) pointing at the pair, as the DAG reads them."""
        return demo_connections(self.idcs.base_url, self.bitbucket.base_url)

    def stop(self) -> None:
        self.idcs.stop()
        self.bitbucket.stop()


def start_pair(users: int, groups: int, memberships: int, seed: int,
               meanwhile: Callable[[], object] | None = None) -> EmulatorPair:
    """Both emulators, started side by side (their imports and the seeding overlap, and with
    ``meanwhile``, e.g. the harness's own warm-up)."""
    launched = {"idcs": launch_emulator("idcs", users=users, groups=groups,
                                        memberships=memberships, seed=seed),
                "bitbucket": launch_emulator("bitbucket")}
    ready: dict[str, Emulator] = {}
    try:
        if meanwhile is not None:
            meanwhile()
        for kind, process in launched.items():
            ready[kind] = wait_ready(kind, process)
    except Exception:
        for process in launched.values():
            process.kill()
        raise
    return EmulatorPair(ready["idcs"], ready["bitbucket"])
