"""One way to make HTTP sessions: timeouts, and urllib3 retries for transient failures.

Retried: connection errors, read timeouts, 429 (honouring ``Retry-After``), 502, 503 and 504, with
exponential backoff. Every method is retried, POST included: the callers' operations are idempotent
(a create that already happened answers 409 and is read as done).
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpSettings:
    timeout: float = 30.0
    retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    pool_size: int = 8


class ApiError(RuntimeError):
    """An API answered with an error. ``transient`` says whether trying again later may help."""

    def __init__(self, service: str, status: int | None, message: str, method: str = "",
                 url: str = "", detail: str = "") -> None:
        self.service, self.status, self.message = service, status, message
        self.method, self.url, self.detail = method, url, detail
        where = f" on {method} {url}" if method else ""
        super().__init__(f"{service} {status or 'error'}{where}: {message}")

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in TRANSIENT_STATUSES


def make_session(settings: HttpSettings | None = None, verify: bool | str = True) -> requests.Session:
    settings = settings or HttpSettings()
    retry = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        status_forcelist=sorted(TRANSIENT_STATUSES - {500}),
        allowed_methods=None,  # retry every method: operations are idempotent
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=settings.pool_size,
                          pool_maxsize=settings.pool_size)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = verify
    return session
