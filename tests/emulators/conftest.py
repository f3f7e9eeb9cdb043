"""The Bitbucket emulator app and an admin test client, shared by its test modules (the IDCS
modules define their own ``client``, which takes precedence there)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)

API = "/rest/api/1.0"
ADMIN_AUTH = (DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD)


@pytest.fixture
def app() -> Starlette:
    return create_bitbucket_app()


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        test_client.auth = ADMIN_AUTH
        yield test_client
