"""Parallel apply tasks share the service account's rate-limit bucket: each client paces to its
share, so together they stay under the server's limit instead of overrunning it share-fold.

Counts, not time: the server's own 429 answers decide. Bounded: 4 clients × 40 requests at
about 45/s after the burst, a few seconds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from identity_sync.bitbucket.client import BitbucketClient, BitbucketError
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings

CLIENTS, REQUESTS = 4, 40
LIMIT = {"capacity": 20, "fillRate": 50}


def test_each_client_paces_to_its_share_of_the_bucket() -> None:
    client = BitbucketClient("http://127.0.0.1:9", "u", "p",
                             settings=HttpSettings(rate_limit_share=4))
    assert client.transport.limiter is not None  # Bitbucket's documented 60 / 5 per s, × 0.95
    assert (client.transport.limiter.capacity, client.transport.limiter.fill_rate) == (14.25,
                                                                                        1.1875)
    client.share_rate_limit(2)
    assert (client.transport.limiter.capacity, client.transport.limiter.fill_rate) == (28.5,
                                                                                        2.375)
    off = BitbucketClient("http://127.0.0.1:9", "u", "p",
                          settings=HttpSettings(rate_limit_fill_rate=0))
    off.share_rate_limit(4)
    assert off.transport.limiter is None  # pacing off stays off


def _throttled(base: str, share: int) -> tuple[int, int]:
    """(requests the server answered, of which 429) for CLIENTS clients pacing to 1/share."""
    clients = [BitbucketClient(base, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                               settings=HttpSettings(retries=0, max_concurrency=2,
                                                    rate_limit_margin=0.5))
               for _ in range(CLIENTS)]
    for client in clients:
        client.share_rate_limit(share)
        client.preflight()  # reads the server's bucket: 20, 50 per second
    # Setting the limit again refills the server's bucket: count from a full one.
    requests.put(f"{base}/_emulator/rate-limit", json=LIMIT, timeout=5)
    requests.delete(f"{base}/_emulator/responses", timeout=5)

    def one_client(client: BitbucketClient) -> None:
        for _ in range(REQUESTS):
            try:
                client.request("GET", "/admin/groups", params={"limit": 1})
            except BitbucketError as err:
                if err.status != 429:
                    raise

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one_client, clients))
    seen = requests.get(f"{base}/_emulator/responses", timeout=5).json()
    return seen["total"], seen["responses"].get("429", 0)


@pytest.mark.parametrize(("share", "overrun"), [(CLIENTS, False), (1, True)])
def test_parallel_clients_stay_under_the_servers_limit_only_when_sharing(share: int,
                                                                          overrun: bool) -> None:
    app = create_bitbucket_app()
    with serving(app) as server:
        requests.put(f"{server.base_url}/_emulator/rate-limit",
                     json=LIMIT, timeout=5)
        total, throttled = _throttled(server.base_url, share)
    assert total == CLIENTS * REQUESTS
    # Each client paces to half the server's settings (margin 0.5) so a loaded machine's
    # scheduling jitter cannot push the sharing clients over: 4 × 1/4 × 25/s against 50/s.
    if overrun:  # four buckets of 10 at 25/s each against one of 20 at 50/s: refusals
        assert throttled > 0.05 * total
    else:
        assert throttled <= 0.01 * total
