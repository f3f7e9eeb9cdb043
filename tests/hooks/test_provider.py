"""The ``idcs`` and ``bitbucket`` connection types as Airflow sees them: discovered by the
ProvidersManager through the ``apache_airflow_provider`` entry point, with the connection form's
fields and labels, and "Test connection" (``Connection.test_connection``, what the API server's
``POST /api/v2/connections/test`` runs) working against the emulators."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_idcs_app,
)
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync_airflow.hooks import BitbucketHook, IdcsHook, _verify
from identity_sync_airflow.provider import PACKAGE_NAME, get_provider_info


@pytest.fixture(scope="module")
def providers():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


@pytest.fixture(scope="module")
def emulator_urls() -> Iterator[tuple[str, str]]:
    idcs = create_idcs_app()
    idcs.state.emulator.load_dict(generate_idcs_org(5, 12, 3))
    with serving(idcs) as idcs_server, serving(create_bitbucket_app()) as bitbucket_server:
        yield idcs_server.base_url, bitbucket_server.base_url


def test_entry_point_is_installed_and_valid_against_airflows_schema() -> None:
    import jsonschema
    from airflow.providers_manager import _create_provider_info_schema_validator

    ours = [e for e in entry_points(group="apache_airflow_provider")
            if e.value.startswith("identity_sync_airflow.")]
    assert len(ours) == 1, "run `uv sync` so the project's entry point is installed"
    info = ours[0].load()()
    assert info == get_provider_info()
    _create_provider_info_schema_validator().validate(info)
    with pytest.raises(jsonschema.ValidationError):
        _create_provider_info_schema_validator().validate({"name": "no description"})


def test_providers_manager_registers_both_connection_types(providers) -> None:
    assert PACKAGE_NAME in providers.providers
    hooks = providers.hooks
    for conn_type, hook in (("idcs", IdcsHook), ("bitbucket", BitbucketHook)):
        info = hooks[conn_type]
        assert info.hook_class_name == f"{hook.__module__}.{hook.__name__}"
        assert (info.hook_name, info.connection_id_attribute_name) == (
            hook.hook_name, hook.conn_name_attr)
        assert info.package_name == PACKAGE_NAME


def test_connection_form_fields_and_labels(providers) -> None:
    widgets = providers.connection_form_widgets
    assert {k for k in widgets if k.startswith("extra__idcs__")} == {
        "extra__idcs__app_id", "extra__idcs__scope", "extra__idcs__verify",
        "extra__idcs__ca_bundle"}
    assert {k for k in widgets if k.startswith("extra__bitbucket__")} == {
        "extra__bitbucket__verify", "extra__bitbucket__ca_bundle"}
    assert widgets["extra__idcs__app_id"].field["schema"]["title"] == "App ID"
    assert widgets["extra__bitbucket__verify"].field["value"] is True
    behaviours = providers.field_behaviours
    assert behaviours["idcs"]["relabeling"] == {
        "host": "Domain URL", "login": "Client ID", "password": "Client secret"}
    assert behaviours["bitbucket"]["relabeling"]["login"] == "Service account"
    assert behaviours["idcs"]["hidden_fields"] == ["schema"]
    assert "Test button" in behaviours["bitbucket"]["placeholders"]["port"]
    # The hooks answer the same when asked directly.
    assert IdcsHook.get_ui_field_behaviour()["relabeling"] == behaviours["idcs"]["relabeling"]
    assert BitbucketHook.get_ui_field_behaviour()["placeholders"]["host"] == (
        "https://bitbucket.example.com")


def ui_test_connection(conn_type: str, host: str, login: str, password: str,
                       extra: dict) -> tuple[bool, str]:
    """What the API server does for the form's Test button: a transient env-var connection,
    then ``Connection.test_connection()`` through the hook the ProvidersManager names."""
    from airflow.models.connection import Connection

    conn = Connection(conn_id="h6_transient", conn_type=conn_type, host=host, login=login,
                      password=password, extra=json.dumps(extra))
    os.environ["AIRFLOW_CONN_H6_TRANSIENT"] = conn.get_uri()
    try:
        return conn.test_connection()
    finally:
        del os.environ["AIRFLOW_CONN_H6_TRANSIENT"]


def test_test_connection_against_the_emulators(emulator_urls) -> None:
    idcs_url, bitbucket_url = emulator_urls
    ok, message = ui_test_connection("idcs", idcs_url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET,
                                     {"app_id": DEMO_APP_ID, "verify": True, "ca_bundle": None})
    assert (ok, message) == (True, "Connected: token issued, 12 users visible")
    ok, message = ui_test_connection("idcs", idcs_url, DEMO_CLIENT_ID, "wrong", {})
    assert not ok and "401" in message
    ok, message = ui_test_connection("bitbucket", bitbucket_url, DEMO_ADMIN_USER,
                                     DEMO_ADMIN_PASSWORD, {"verify": False})
    assert ok, message
    ok, message = ui_test_connection("bitbucket", bitbucket_url, DEMO_ADMIN_USER, "wrong", {})
    assert not ok and "Authentication failed" in message


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, True),
    ({"verify": None, "ca_bundle": ""}, True),  # the form's empty fields
    ({"verify": False}, False),
    ({"verify": "false"}, False),                # URI form: strings
    ({"verify": __file__}, __file__),             # a CA bundle path: must exist
    ({"verify": False, "ca_bundle": __file__}, __file__),
])
def test_tls_options(extra, expected) -> None:
    assert _verify(extra) == expected
