"""Hostile input: answers no Bitbucket would give, and names crafted to inject into SQL, logs
or a UI. Each is refused with one clear sentence, or stored and shown as plain data."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import inspect, select

from identity_sync.audit import schema
from identity_sync.bitbucket.client import BitbucketClient, BitbucketError
from identity_sync.bitbucket.transport import BodyLimits
from identity_sync.emulators.common import serving
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.http import HttpSettings

from .conftest import Env

GROUPS = "/rest/api/1.0/admin/groups"
HTML = (b"<!DOCTYPE html><html><head><title>Sign in - Corporate SSO</title></head>"
        b"<body><form>\n<script>steal()</script></form></body></html>")


async def hostile_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """One misbehaving answer per ``?case=``, on the groups listing."""
    if scope["type"] != "http":
        return
    case = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&")
                if "=" in p).get("case", "")

    async def answer(status: int, ctype: str, body: bytes, length: bool = True) -> None:
        headers = [(b"content-type", ctype.encode())]
        if length:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    page = json.dumps({"values": [{"name": "g"}], "isLastPage": True}).encode()
    if case == "huge_declared":
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"900000000")]})
        await send({"type": "http.response.body", "body": b"[" * 1000})
    elif case == "huge_chunked":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        for _ in range(64):  # 4 MiB with no length given, far past the test's 256 KiB cap
            await send({"type": "http.response.body", "body": b" " * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": page})
    elif case == "deep":
        await answer(200, "application/json", b"[" * 100_000 + b"]" * 100_000)
    elif case == "nested":
        await answer(200, "application/json", b'{"values": ' + b"[" * 100 + b"]" * 100 + b"}")
    elif case == "html_200":
        await answer(200, "text/html; charset=utf-8", HTML)
    elif case == "html_502":
        await answer(502, "text/html", HTML)
    elif case == "text_plain":
        await answer(200, "text/plain", page)
    elif case == "not_a_page":
        await answer(200, "application/json", b'"values"')
    elif case == "drip":
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"10000")]})
        for _ in range(200):  # a byte every 50 ms: no single read ever times out
            await send({"type": "http.response.body", "body": b" ", "more_body": True})
            await asyncio.sleep(0.05)
    else:
        await answer(200, "application/json;charset=UTF-8", page)


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    with serving(hostile_app) as server:
        yield server.base_url


def client(url: str, retries: int = 0) -> BitbucketClient:
    bb = BitbucketClient(url, "svc", "pw", settings=HttpSettings(
        timeout=2.0, retries=retries, backoff_factor=0.01, rate_limit_fill_rate=0))
    bb.transport.limits = BodyLimits(max_bytes=256 * 1024, deadline=0.5)
    return bb


def groups(bb: BitbucketClient, case: str) -> list[str]:
    return [g["name"] for g in bb.iter_pages("/admin/groups", {"case": case})]


@pytest.mark.parametrize(("case", "says"), [
    ("huge_declared", "answer of 900000000 bytes refused"),
    ("huge_chunked", "answer larger than 262144 bytes refused"),
    ("deep", "answer is not valid JSON"),
    ("nested", "answer nests deeper than 64 levels"),
    ("html_200", "content type 'text/html' (an HTML page titled 'Sign in - Corporate SSO')"),
    ("text_plain", "content type 'text/plain'"),
    ("not_a_page", "not a page of values"),
])
def test_hostile_answers_are_refused_in_one_sentence(hostile: str, case: str,
                                                     says: str) -> None:
    bb = client(hostile, retries=3)
    with pytest.raises(BitbucketError) as err:
        groups(bb, case)
    message = str(err.value)
    assert says in message
    assert "\n" not in message and "<" not in message and len(message) < 400
    assert bb.requests_made == 1  # nothing here gets better by asking again
    assert groups(bb, "fine") == ["g"]  # and the client is still usable


def test_html_error_page_is_reported_by_its_title(hostile: str) -> None:
    bb = client(hostile)
    with pytest.raises(BitbucketError) as err:
        groups(bb, "html_502")
    assert err.value.status == 502 and "Sign in - Corporate SSO" in str(err.value)
    assert "<" not in str(err.value) and "steal" not in str(err.value)


def test_slow_drip_body_is_given_up_and_retried(hostile: str) -> None:
    bb = client(hostile, retries=1)
    with pytest.raises(BitbucketError) as err:
        groups(bb, "drip")
    assert err.value.status is None and "still arriving after 0.5s" in str(err.value)
    assert bb.requests_made == 2 and bb.transport.stats["hostile_answers"] == 2


# ---- names crafted to inject -------------------------------------------------------------------

SQL = "Robert'); DROP TABLE sync_runs;--"
SCRIPT = "<script>alert(document.cookie)</script>"
FORGED = "eve\n2026-11-29 04:00:00 INFO identity sync succeeded"


def test_names_crafted_to_inject_are_stored_as_data(make_env: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    org = generate_idcs_org(8, 120, 10)
    granted = {m["value"] for g in org["groups"] if g["displayName"] == "Bitbucket Users"
               for m in g["members"]}
    active = [u for u in org["users"] if u["active"] and u["id"] in granted]
    active[0]["displayName"] = SQL
    active[1]["displayName"] = SCRIPT
    active[2]["userName"] = FORGED
    active[3]["userName"] = "x' OR '1'='1"
    next(g for g in org["groups"] if g.get("members"))["displayName"] = \
        "Ops'; DELETE FROM plan_operations;--"
    env: Env = make_env(org)
    with caplog.at_level(logging.INFO):
        result = env.run("inject")
    assert result.status == "succeeded", result.message

    store = env.store
    tables = set(inspect(store.engine).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= tables  # nothing dropped
    assert len(store.plan("inject")) > 50
    with store.engine.connect() as conn:
        values = [r.value for r in conn.execute(select(schema.quarantine))]
    assert FORGED in values  # kept verbatim, as a bound parameter, never as SQL text
    users = {u.name: u.display_name for u in env.bb_state.users.values()}
    assert SQL in users.values() and SCRIPT in users.values()  # plain data, both sides
    # a log line never starts with text from IDCS: the forged line stays inside one record
    lines = [line for r in caplog.records for line in r.getMessage().splitlines()[1:]]
    assert not any(line.startswith("2026-11-29 04:00:00 INFO") for line in lines)
    snapshot = json.loads(gzip.decompress(store.engine.connect().execute(
        select(schema.run_artifacts.c.payload).where(
            schema.run_artifacts.c.name == "idcs_snapshot")).scalar_one()))
    assert any(u.get("user_name") == FORGED or u.get("userName") == FORGED
               for u in snapshot["users"])


def test_every_request_of_a_run_has_connect_and_read_timeouts(
        make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    send = requests.adapters.HTTPAdapter.send

    def recording(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("timeout", args[1] if len(args) > 1 else None))
        return send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", recording)
    env: Env = make_env(generate_idcs_org(9, 40, 5))
    assert env.run("timeouts").status == "succeeded"
    assert len(seen) > 20
    assert all(isinstance(t, tuple) and len(t) == 2 and all(0 < x <= 30 for x in t)
               for t in seen), set(map(str, seen))
