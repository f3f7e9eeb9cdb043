"""Hooks over the IDCS, Bitbucket and audit-store connections, shaped like Airflow's ``HttpHook``:
class attributes name the connection, the constructor only stores arguments, ``get_conn()`` builds
the client lazily and caches it, and ``test_connection()`` answers ``(ok, message)``."""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.http import ApiError
from identity_sync.idcs.client import SCOPE, IdcsClient
from identity_sync_airflow.provider import BITBUCKET_CONNECTION, IDCS_CONNECTION, field_behaviour

log = logging.getLogger(__name__)


def _base_url(conn: Any, default_scheme: str = "https") -> str:
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host (the service's base URL)")
    if "://" not in host:
        host = f"{conn.schema or default_scheme}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return host


class InsecureConnectionError(ValueError):
    """A connection to a remote host without https or without certificate verification, and
    without ``"allow_insecure": true`` in its extra: refused before any secret is sent."""


def _flag(value: Any) -> bool | None:
    """A JSON boolean, or a URI-form connection's ``"true"``/``"false"`` (any case); None
    for anything else (``0``, ``"no"``, ``""`` are not guessed at)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _verify(extra: dict[str, Any], conn_id: str = "the connection") -> bool | str:
    """TLS verification for ``requests``: ``ca_bundle`` (a PEM path, the connection form's
    field) wins; else ``verify``: true/false, ``"true"``/``"false"`` (any case), or the path of
    an existing CA bundle file. Absent (or the form's empty field, None) means true; any other
    value is an error naming the connection and the field."""
    bundle = extra.get("ca_bundle")
    if bundle is not None and bundle != "":  # the form's empty field: not set
        if not isinstance(bundle, str) or not os.path.isfile(bundle):
            raise ValueError(f"connection {conn_id!r}: extra 'ca_bundle' must be the path of an "
                             f"existing CA bundle file, not {bundle!r}")
        return bundle
    value = extra.get("verify")
    if value is None:
        return True
    flag = _flag(value)
    if flag is not None:
        return flag
    if isinstance(value, str) and value.strip() and os.path.isfile(value):
        return value
    what = ("names no existing CA bundle file" if isinstance(value, str) and value.strip()
            else "is not valid")
    raise ValueError(f"connection {conn_id!r}: extra 'verify' {what} ({value!r}); use true, "
                     "false or the path of an existing CA bundle file")


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: the bundled emulators and the tests, never the network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint(conn: Any) -> tuple[str, bool | str]:
    """The connection's base URL and ``verify`` value, its secret (IDCS client secret,
    Bitbucket service password) masked in every task log line from now on; the transport
    policy (:func:`_transport`) refuses an insecure one here, before the secret is sent."""
    if conn.password:
        mask_secret(conn.password)
    url = _base_url(conn)
    return url, _transport(conn, url)


def _transport(conn: Any, url: str) -> bool | str:
    """The ``verify`` value for the client, once ``url`` passes the transport policy: a remote
    host needs https with certificate verification, unless the extra says
    ``"allow_insecure": true``, which is logged as a warning every time a client is built."""
    extra = conn.extra_dejson
    verify = _verify(extra, conn.conn_id)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"connection {conn.conn_id!r}: host {url!r} is not an http(s) URL")
    allow = extra.get("allow_insecure", False)
    if _flag(allow) is None:
        raise ValueError(f"connection {conn.conn_id!r}: extra 'allow_insecure' must be true or "
                         f"false, not {allow!r}")
    if _is_loopback(parts.hostname):
        return verify
    insecure = []
    if parts.scheme != "https":
        insecure.append("plain http (no TLS: credentials and answers travel unencrypted)")
    if verify is False:
        insecure.append("TLS certificate verification off (verify: false)")
    if not insecure:
        return verify
    what = " and ".join(insecure)
    if not _flag(allow):
        raise InsecureConnectionError(
            f"connection {conn.conn_id!r} to {parts.hostname} refused: {what}; use an https URL "
            "with certificate verification (or a CA bundle), or, for a test instance only, set "
            '"allow_insecure": true in its extra')
    log.warning("connection %r to %s is insecure: %s (allowed by its extra "
                '"allow_insecure": true)', conn.conn_id, parts.hostname, what)
    return verify


class IdcsHook(BaseHook):
    """Oracle IDCS / OCI IAM identity domain. Host: the domain URL; login/password: the
    confidential app's client id and secret; extra: ``app_id`` (the IDCS App whose grants define
    the scope), ``scope`` (default ``urn:opc:idm:__myscopes__``), ``verify``."""

    conn_name_attr = "idcs_conn_id"
    default_conn_name = "idcs_default"
    conn_type = "idcs"
    hook_name = "Oracle IDCS"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Form labels for the standard fields; Airflow reads the same from the provider info."""
        return field_behaviour(IDCS_CONNECTION)

    def __init__(self, idcs_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.idcs_conn_id = idcs_conn_id
        self.client: IdcsClient | None = None
        self.app_id: str | None = None

    def get_conn(self) -> IdcsClient:
        if self.client is not None:
            return self.client
        conn = self.get_connection(self.idcs_conn_id)
        extra = conn.extra_dejson
        self.app_id = extra.get("app_id")
        url, verify = _endpoint(conn)
        self.client = IdcsClient(url, conn.login or "", conn.password or "",
                                 scope=extra.get("scope") or SCOPE, verify=verify)
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        try:
            body = self.get_conn().get("/admin/v1/Users", {"count": 0})
        except (ApiError, ValueError, OSError) as exc:
            return False, str(exc)
        return True, f"Connected: token issued, {body.get('totalResults', 0)} users visible"


class BitbucketHook(BaseHook):
    """Bitbucket Data Center. Host: the base URL (e.g. ``https://bitbucket.example.com``);
    login/password: an internal-directory service account with global ADMIN; extra: ``verify``."""

    conn_name_attr = "bitbucket_conn_id"
    default_conn_name = "bitbucket_default"
    conn_type = "bitbucket"
    hook_name = "Bitbucket Data Center"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Form labels for the standard fields; Airflow reads the same from the provider info."""
        return field_behaviour(BITBUCKET_CONNECTION)

    def __init__(self, bitbucket_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.bitbucket_conn_id = bitbucket_conn_id
        self.client: BitbucketClient | None = None

    def get_conn(self) -> BitbucketClient:
        if self.client is None:
            conn = self.get_connection(self.bitbucket_conn_id)
            url, verify = _endpoint(conn)
            self.client = BitbucketClient(url, conn.login or "", conn.password or "",
                                          verify=verify)
            self.client.on_secret = mask_secret  # each initial password, as it is made up
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        try:
            page = self.get_conn().request("GET", "/admin/users", params={"limit": 1}).json()
        except (ApiError, ValueError, OSError) as exc:
            return False, str(exc)
        return True, f"Connected: admin API answered ({page.get('size', 0)} user on first page)"


class AuditStoreHook(BaseHook):
    """The audit database (never Airflow's metadata DB). ``sqlite``: host is the file path;
    ``postgres``: host, port, login, password, schema (the database name); or extra
    ``sqlalchemy_url`` to give the URL outright."""

    conn_name_attr = "audit_conn_id"
    default_conn_name = "sync_audit_db"
    conn_type = "sqlite"
    hook_name = "Sync audit store"

    def __init__(self, audit_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.audit_conn_id = audit_conn_id
        self.store: AuditStore | None = None

    def sqlalchemy_url(self) -> str:
        conn = self.get_connection(self.audit_conn_id)
        extra = conn.extra_dejson
        if extra.get("sqlalchemy_url"):
            return str(extra["sqlalchemy_url"])
        if conn.conn_type == "sqlite":
            if not conn.host or not conn.host.startswith("/"):
                raise ValueError(f"{self.audit_conn_id}: sqlite needs an absolute file path as host")
            return f"sqlite:///{conn.host}"
        if conn.conn_type in ("postgres", "postgresql"):
            from sqlalchemy.engine import URL

            return URL.create("postgresql+psycopg", username=conn.login, password=conn.password,
                              host=conn.host, port=conn.port, database=conn.schema).render_as_string(
                hide_password=False)
        raise ValueError(f"{self.audit_conn_id}: unsupported conn_type {conn.conn_type!r} "
                         "(use sqlite or postgres)")

    def get_conn(self) -> AuditStore:
        if self.store is None:
            self.store = AuditStore(self.sqlalchemy_url())
        return self.store

    def test_connection(self) -> tuple[bool, str]:
        try:
            runs = self.get_conn().runs(limit=1)
        except Exception as exc:  # any driver error is a failed test
            return False, str(exc)
        return True, f"Connected: audit schema ready ({len(runs)} recent run found)"
