"""Constants, errors and the SCIM response helper shared by the IDCS emulator's modules.

Why separate: the state, projection, search and HTTP modules of the emulator (and
:mod:`.orggen`, :mod:`.idcs_corpus`, :mod:`.idcs_endpoints`) all need the demo credentials,
schema URNs, paging limits and :class:`ScimError`. A leaf module with no emulator imports lets
each of them import these without importing the app (:mod:`.idcs`), so no import cycle forms.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

DEMO_CLIENT_ID = "sync-client"
DEMO_CLIENT_SECRET = "sync-secret"
DEMO_APP_ID = "a3c0e3b1f2d54e6f9a7b8c9d0e1f2a3b"
SCOPE = "urn:opc:idm:__myscopes__"
EXPIRY_SCOPE_PREFIX = "urn:opc:resource:expiry="

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
GRANT_SCHEMA = "urn:ietf:params:scim:schemas:oracle:idcs:Grant"
APP_SCHEMA = "urn:ietf:params:scim:schemas:oracle:idcs:App"
USER_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User"
USER_STATE_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:userState:User"
GROUP_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:group:Group"
DYNAMIC_GROUP_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:dynamic:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
ORACLE_ERROR_SCHEMA = "urn:ietf:params:scim:api:oracle:idcs:extension:messages:Error"
SCIM_MEDIA_TYPE = "application/scim+json;charset=UTF-8"

ALL_USERS_ID = "AllUsersId"
ALL_USERS_NAME = "All Tenant Users"
ALL_USERS_CREATED = "2023-11-02T09:00:00.000Z"
DEFAULT_COUNT = 50
MAX_COUNT = 1000
MEMBER_CAP = 10_000


# --- errors -------------------------------------------------------------------------------------


class ScimError(Exception):
    """An error the real service reports as a SCIM Error body (``status`` is a string)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        scim_type: str | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type, self.message_id = (
            status,
            detail,
            scim_type,
            message_id,
        )

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemas": [ERROR_SCHEMA],
            "detail": self.detail,
            "status": str(self.status),
        }
        if self.scim_type:
            body["scimType"] = self.scim_type
        if self.message_id:
            body["schemas"].append(ORACLE_ERROR_SCHEMA)
            body[ORACLE_ERROR_SCHEMA] = {"messageId": self.message_id}
        return body


class OAuthError(Exception):
    """A token endpoint error (RFC 6749 body plus Oracle's ``ecid``)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def scim_response(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, media_type=SCIM_MEDIA_TYPE)
