"""Hooks over the IDCS, Bitbucket and audit-store connections, shaped like Airflow's ``HttpHook``:
class attributes name the connection, the constructor only stores arguments, ``get_conn()`` builds
the client lazily and caches it, and ``test_connection()`` answers ``(ok, message)``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.http import ApiError
from identity_sync.idcs.client import SCOPE, IdcsClient
from identity_sync_airflow.provider import BITBUCKET_CONNECTION, IDCS_CONNECTION, field_behaviour


def _base_url(conn: Any, default_scheme: str = "https") -> str:
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"connection {conn.conn_id!r} has no host (the service's base URL)")
    if "://" not in host:
        host = f"{conn.schema or default_scheme}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return host


def _verify(extra: dict[str, Any]) -> bool | str:
    """TLS verification for ``requests``: ``ca_bundle`` (a PEM path, the connection form's
    field) wins; else ``verify`` as a bool, a URI's ``"false"`` string, or a CA bundle path."""
    if extra.get("ca_bundle"):
        return str(extra["ca_bundle"])
    value = extra.get("verify", True)
    if value is None or value == "":
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no"):
        return False
    if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
        return True
    return value  # a CA bundle path, or a bool from a JSON connection


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
        self.client = IdcsClient(_base_url(conn), conn.login or "", conn.password or "",
                                 scope=extra.get("scope") or SCOPE, verify=_verify(extra))
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
            self.client = BitbucketClient(_base_url(conn), conn.login or "", conn.password or "",
                                          verify=_verify(conn.extra_dejson))
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
