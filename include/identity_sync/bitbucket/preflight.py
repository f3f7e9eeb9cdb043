"""Before the first write: how Bitbucket will rate-limit this account, and is the account right?

Why: a sync that learns about rate limiting from 429s wastes minutes and can starve other
integrations; one that runs as an LDAP user or a token cannot call the admin API reliably. Three
reads (rate-limit settings, the account's own entry, the account itself) decide the client's
pace: none when limiting is off or the account is allow-listed, else the server's bucket times
``rate_limit_margin``. Anything that cannot be read is a warning, never a stop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as url_quote

from ..http import ApiError

if TYPE_CHECKING:
    from .client import BitbucketClient

log = logging.getLogger(__name__)

INTERNAL_DIRECTORY = "Bitbucket Internal Directory"


@dataclass
class PreflightReport:
    rate_limiting: bool | None = None  # None: could not be read
    capacity: int | None = None  # the bucket that applies to the service account
    fill_rate: int | None = None
    allow_listed: bool | None = None
    account: dict[str, Any] | None = None
    client_rate: tuple[float, float] | None = None  # (capacity, per second) the client keeps to
    warnings: list[str] = field(default_factory=list)


def allow_list_call(base_url: str, slug: str) -> str:
    """The exact request an administrator sends to exempt the account (reference §9)."""
    return (f"curl -u <admin> -X PUT -H 'Content-Type: application/json' "
            f"-d '{{\"whitelisted\": true}}' "
            f"{base_url}/rest/api/1.0/admin/rate-limit/settings/users/{url_quote(slug, safe='')}")


def run_preflight(client: BitbucketClient) -> PreflightReport:
    report = PreflightReport()
    name = client.username
    try:
        report.account = client.find_user(name)
    except ApiError as err:
        report.warnings.append(f"cannot read the service account {name}: {err}")
    account = report.account or {}
    if report.account is not None and (account.get("directoryName") != INTERNAL_DIRECTORY
                                       or not account.get("mutableDetails", True)):
        report.warnings.append(
            f"the service account {name} is in directory {account.get('directoryName')!r}; use "
            f"an account of the {INTERNAL_DIRECTORY} so a directory outage cannot lock it out")

    try:
        settings = client.rate_limit_settings()
        report.rate_limiting = bool(settings.get("enabled"))
        defaults = settings.get("defaultSettings") or {}
        report.capacity, report.fill_rate = defaults.get("capacity"), defaults.get("fillRate")
        own = client.user_rate_limits(name) if report.rate_limiting else None
        if report.rate_limiting:  # the allow-list matters only when limiting is on
            report.allow_listed = bool(own and own.get("whitelisted"))
        if own and not own.get("whitelisted") and own.get("settings"):
            report.capacity = own["settings"].get("capacity", report.capacity)
            report.fill_rate = own["settings"].get("fillRate", report.fill_rate)
    except ApiError as err:
        report.warnings.append(f"cannot read Bitbucket's rate-limit settings ({err}); pacing at "
                               "Bitbucket's documented default of 60 requests, 5 per second")

    if report.rate_limiting and not report.allow_listed:
        slug = account.get("slug") or name
        report.warnings.append(
            f"the service account {name} is not allow-listed in Bitbucket's rate limiting "
            f"(bucket {report.capacity}, {report.fill_rate}/s): the sync will pace itself and "
            f"large runs will be slow. Allow-list it: {allow_list_call(client.base_url, slug)}")
    pace(client, report)
    for warning in report.warnings:
        log.warning("Bitbucket preflight: %s", warning)
    return report


def pace(client: BitbucketClient, report: PreflightReport) -> None:
    """Set the client's pacing from a preflight report (kept if configured by hand)."""
    s = client.settings
    if s.rate_limit_fill_rate is not None:  # configured by hand: keep it
        return
    if report.rate_limiting is False or report.allow_listed:
        client.transport.set_rate(None, None)
        return
    if report.capacity and report.fill_rate:
        rate = (report.capacity * s.rate_limit_margin, report.fill_rate * s.rate_limit_margin)
        client.transport.set_rate(*rate)
        report.client_rate = rate
