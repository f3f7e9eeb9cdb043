"""The IDCS emulator on a real socket (free port), with helpers to seed it, steer its faults and
build clients whose backoff sleeps are recorded instead of slept (no timed assertions)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, create_idcs_app
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.http import HttpSettings
from identity_sync.idcs.client import IdcsClient

# Tiny backoff, real retry counts: tests see every retry decision without waiting for it.
FAST = HttpSettings(timeout=5.0, connect_timeout=2.0, retries=6, backoff_factor=0.001,
                    backoff_max=0.004, retries_500=2, retry_max_wait=30.0)


@dataclass
class Idcs:
    """A running emulator: its app (in-process state) and URL, plus control calls."""

    app: Any
    url: str
    sleeps: list[float] = field(default_factory=list)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        resp = requests.request(method, f"{self.url}/_emulator/{path}", json=body, timeout=10)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def seed(self, state: dict[str, Any]) -> None:
        self.app.state.emulator.load_dict(state)

    def dump(self) -> dict[str, Any]:
        return copy.deepcopy(self.app.state.emulator.to_dict())

    def faults(self, **settings: Any) -> None:
        self.control("PUT", "faults", settings)

    def responses(self) -> dict[str, int]:
        return self.control("GET", "responses")["responses"]

    def client(self, settings: HttpSettings = FAST, **kwargs: Any) -> IdcsClient:
        """A client whose backoff sleeps are recorded in ``sleeps`` (and not slept)."""
        return IdcsClient(self.url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, settings=settings,
                          sleep=self.sleeps.append, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Any, str]]:
    app = create_idcs_app()
    with serving(app) as running:
        yield app, running.base_url


@pytest.fixture
def idcs(server: tuple[Any, str]) -> Iterator[Idcs]:
    """A small organisation (60 users, 8 groups), no faults, fresh counters."""
    app, url = server
    emulator = Idcs(app, url)
    emulator.control("POST", "reset")
    emulator.control("DELETE", "responses")
    emulator.seed(generate_idcs_org(11, 60, 8))
    yield emulator
    emulator.control("POST", "reset")


def page_cap(idcs: Idcs, cap: int, **rules: Any) -> None:
    """Make listings answer at most ``cap`` resources per page (legal SCIM), so a small tenant
    spans several pages; ``rules`` adds corruption rules."""
    idcs.control("PUT", "corruptions", {"page_cap": cap, "rules": rules.get("rules", [])})
