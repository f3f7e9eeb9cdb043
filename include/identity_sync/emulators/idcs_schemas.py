"""The schemas the IDCS emulator publishes and enforces on writes.

Why: ``/admin/v1/Schemas`` must describe what the emulator accepts, and writes must apply the same
``mutability``/``returned``/``required``/``uniqueness`` rules IDCS declares. The attribute
properties are copied from ``reference/idcs-attribute-metadata.json`` (Oracle's SDK v2.182.1);
the published set is the part of IDCS's User and Group schemas the emulator stores and serves.
Sub-attributes the metadata leaves out (``phoneNumbers``, ``manager``, ``idcsCreatedBy``) follow
RFC 7643 and the identity-domain examples in ``reference/idcs-api.md`` §5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USER_EXT = "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User"
ENTERPRISE_EXT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM_USER_EXT = "urn:ietf:params:scim:schemas:idcs:extension:custom:User"
GROUP_EXT = "urn:ietf:params:scim:schemas:oracle:idcs:extension:group:Group"
DYNAMIC_GROUP_EXT = "urn:ietf:params:scim:schemas:oracle:idcs:extension:dynamic:Group"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"


@dataclass(frozen=True)
class Attr:
    """One attribute's SCIM properties (the defaults are IDCS's most common ones)."""

    name: str
    type: str = "string"
    multi: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    required: bool = False
    case_exact: bool = False
    uniqueness: str = "none"
    sub: tuple[Attr, ...] = ()
    canonical: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()

    def to_scim(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "type": self.type, "multiValued": self.multi,
            "description": f"{self.name} (as IDCS declares it)", "required": self.required,
            "caseExact": self.case_exact, "mutability": self.mutability,
            "returned": self.returned, "uniqueness": self.uniqueness,
        }
        if self.canonical:
            out["canonicalValues"] = list(self.canonical)
        if self.reference_types:
            out["referenceTypes"] = list(self.reference_types)
        if self.sub:
            out["subAttributes"] = [s.to_scim() for s in self.sub]
        return out


RO, IMM, WO = "readOnly", "immutable", "writeOnly"


def _who(name: str) -> Attr:
    """``idcsCreatedBy`` / ``idcsLastModifiedBy``: who wrote the resource (set by the server)."""
    return Attr(name, "complex", mutability=RO, sub=(
        Attr("value", mutability=RO, required=True), Attr("type", mutability=RO),
        Attr("display", mutability=RO), Attr("ocid", mutability=RO),
        Attr("$ref", "reference", mutability=RO, reference_types=("User", "App"))))


_IDENTITY = (
    Attr("ocid", mutability=RO, case_exact=True, uniqueness="global"),
    _who("idcsCreatedBy"), _who("idcsLastModifiedBy"),
    Attr("domainOcid", mutability=RO), Attr("compartmentOcid", mutability=RO),
    Attr("tenancyOcid", mutability=RO), Attr("deleteInProgress", "boolean", mutability=RO),
)

USER_ATTRS: tuple[Attr, ...] = (
    Attr("userName", returned="always", required=True, uniqueness="global"),
    Attr("displayName"), Attr("nickName"), Attr("title"),
    Attr("userType", canonical=("Contractor", "Employee", "Intern", "Temp", "External",
                                "Service", "Generic")),
    Attr("locale"), Attr("preferredLanguage"), Attr("timezone"),
    Attr("active", "boolean"),
    Attr("password", mutability=WO, returned="never"),
    Attr("name", "complex", sub=tuple(Attr(n) for n in (
        "formatted", "familyName", "givenName", "middleName", "honorificPrefix",
        "honorificSuffix"))),
    Attr("emails", "complex", multi=True, sub=(
        Attr("value", required=True), Attr("type", required=True,
                                           canonical=("work", "home", "other", "recovery")),
        Attr("primary", "boolean"), Attr("secondary", "boolean"), Attr("verified", "boolean"),
        Attr("pendingVerificationData", mutability=RO))),
    Attr("phoneNumbers", "complex", multi=True, sub=(
        Attr("value", required=True), Attr("type", required=True,
                                           canonical=("work", "home", "mobile", "fax", "pager",
                                                      "other", "recovery")),
        Attr("primary", "boolean"), Attr("verified", "boolean", mutability=RO),
        Attr("display", mutability=RO))),
    Attr("groups", "complex", multi=True, mutability=RO, returned="request", sub=(
        Attr("value", mutability=RO, returned="always", required=True, case_exact=True),
        Attr("ocid", mutability=RO, case_exact=True),
        Attr("$ref", "reference", mutability=RO, reference_types=("Group",)),
        Attr("display", mutability=RO), Attr("nonUniqueDisplay", mutability=RO),
        Attr("externalId", mutability=RO),
        Attr("type", mutability=RO, returned="request", canonical=("direct", "indirect")),
        Attr("membershipOcid", mutability=RO), Attr("dateAdded", "dateTime", mutability=RO))),
    *_IDENTITY,
)

USER_EXT_ATTRS: tuple[Attr, ...] = (
    Attr("isFederatedUser", "boolean"),
    Attr("isAuthenticationDelegated", "boolean", mutability=IMM, returned="never"),
    Attr("status", mutability=RO, returned="request",
         canonical=("pendingVerification", "verified")),
    Attr("provider", mutability=IMM, canonical=("facebook", "google", "IDCS", "twitter")),
    Attr("preferredUiLandingPage", canonical=("MyApps", "MyProfile", "OciConsole")),
    Attr("creationMechanism", mutability=IMM, returned="request",
         canonical=("bulk", "api", "adsync", "idcsui", "import", "authsync", "selfreg",
                    "samljit")),
    Attr("groupMembershipLastModified", "dateTime", mutability=RO, returned="request"),
    Attr("doNotShowGettingStarted", "boolean"),
    Attr("bypassNotification", "boolean", mutability=IMM, returned="never"),
    Attr("isAccountRecoveryEnrolled", "boolean", mutability=RO, returned="request"),
    Attr("accountRecoveryRequired", "boolean", returned="request"),
    Attr("serviceUser", "boolean", mutability=IMM),
)

ENTERPRISE_ATTRS: tuple[Attr, ...] = (
    Attr("employeeNumber"), Attr("costCenter"), Attr("organization"), Attr("division"),
    Attr("department"),
    Attr("manager", "complex", sub=(
        Attr("value"), Attr("$ref", "reference", mutability=RO, reference_types=("User",)),
        Attr("displayName", mutability=RO))),
)

GROUP_ATTRS: tuple[Attr, ...] = (
    Attr("displayName", returned="always", required=True, uniqueness="global"),
    Attr("nonUniqueDisplayName", returned="always"),
    Attr("members", "complex", multi=True, returned="request", sub=(
        Attr("value", returned="always", required=True, case_exact=True),
        Attr("type", required=True, case_exact=True, canonical=("User",)),
        Attr("ocid", returned="always", case_exact=True),
        Attr("$ref", "reference", mutability=RO, case_exact=True, reference_types=("User",)),
        Attr("display", mutability=RO), Attr("name", mutability=RO),
        Attr("membershipOcid", mutability=RO, case_exact=True),
        Attr("dateAdded", "dateTime", mutability=RO))),
    *_IDENTITY,
)

GROUP_EXT_ATTRS: tuple[Attr, ...] = (
    Attr("description"),
    Attr("creationMechanism", mutability=IMM, returned="request",
         canonical=("api", "adsync", "authsync", "idcsui", "import", "jit", "bulk")),
)

DYNAMIC_GROUP_ATTRS: tuple[Attr, ...] = (
    Attr("membershipType", canonical=("static", "dynamic")),
    Attr("membershipRule"),
)


@dataclass(frozen=True)
class SchemaDef:
    urn: str
    name: str
    description: str
    attributes: tuple[Attr, ...]

    def to_scim(self, base: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA_SCHEMA], "id": self.urn, "name": self.name,
            "description": self.description,
            "attributes": [a.to_scim() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base}/admin/v1/Schemas/{self.urn}"},
        }


SCHEMAS: tuple[SchemaDef, ...] = (
    SchemaDef(CORE_USER, "User", "User Account", USER_ATTRS),
    SchemaDef(USER_EXT, "IDCS User", "Oracle IDCS User extension", USER_EXT_ATTRS),
    SchemaDef(ENTERPRISE_EXT, "EnterpriseUser", "Enterprise User", ENTERPRISE_ATTRS),
    SchemaDef(CUSTOM_USER_EXT, "CustomUser",
              "Custom User attributes (defined per tenant; none are defined here)", ()),
    SchemaDef(CORE_GROUP, "Group", "Group", GROUP_ATTRS),
    SchemaDef(GROUP_EXT, "IDCS Group", "Oracle IDCS Group extension", GROUP_EXT_ATTRS),
    SchemaDef(DYNAMIC_GROUP_EXT, "Dynamic Group", "Dynamic group membership",
              DYNAMIC_GROUP_ATTRS),
)
SCHEMA_BY_URN: dict[str, SchemaDef] = {s.urn.lower(): s for s in SCHEMAS}

# resource type -> (endpoint, core schema, extensions)
RESOURCE_TYPES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "User": ("/Users", CORE_USER, (USER_EXT, ENTERPRISE_EXT, CUSTOM_USER_EXT)),
    "Group": ("/Groups", CORE_GROUP, (GROUP_EXT, DYNAMIC_GROUP_EXT)),
}


def resource_type_body(name: str, base: str) -> dict[str, Any]:
    endpoint, core, extensions = RESOURCE_TYPES[name]
    return {
        "schemas": [RESOURCE_TYPE_SCHEMA], "id": name, "name": name, "endpoint": endpoint,
        "description": f"{name} resource", "schema": core,
        "schemaExtensions": [{"schema": e, "required": False} for e in extensions],
        "meta": {"resourceType": "ResourceType",
                 "location": f"{base}/admin/v1/ResourceTypes/{name}"},
    }


# Bulk: D-RL allows 50 operations per call (D-SC's 413 row says 1000; the lower value wins) and
# payloads up to 1 MB. Filter results: 1000 per page ("the largest value that you can use").
BULK_MAX_OPERATIONS = 50
MAX_PAYLOAD_BYTES = 1_048_576


def service_provider_config(base: str) -> dict[str, Any]:
    """What IDCS advertises: PATCH, bulk (50 ops, 1 MB), filter (1000), sort, ETag; no
    self-service password change through SCIM (IDCS has its own MePasswordChanger endpoint)."""
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://docs.oracle.com/en-us/iaas/Content/Identity/api-getstarted/"
                            "identity-domains-rest-apis.htm",
        "patch": {"supported": True},
        "bulk": {"supported": True, "maxOperations": BULK_MAX_OPERATIONS,
                 "maxPayloadSize": MAX_PAYLOAD_BYTES},
        "filter": {"supported": True, "maxResults": 1000},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "OAuth Bearer Token",
            "description": "OAuth 2.0 client credentials access token from /oauth2/v1/token",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750", "primary": True}],
        "meta": {"resourceType": "ServiceProviderConfig",
                 "location": f"{base}/admin/v1/ServiceProviderConfig"},
    }


def attr_index(resource_type: str) -> dict[str, Attr]:
    """Lower-case attribute path -> Attr for one resource type: ``name.givenName`` for the core
    schema, ``<urn>:<attr>`` and ``<urn>:<attr>.<sub>`` for extensions, every URN itself."""
    _, core, extensions = RESOURCE_TYPES[resource_type]
    out: dict[str, Attr] = {"externalid": Attr("externalId")}  # a common attribute (RFC 7643 §3.1)
    for urn in (core, *extensions):
        prefix = "" if urn == core else urn.lower() + ":"
        if urn != core:
            out[urn.lower()] = Attr(urn, "complex")
        for attr in SCHEMA_BY_URN[urn.lower()].attributes:
            out[prefix + attr.name.lower()] = attr
            for sub in attr.sub:
                out[f"{prefix}{attr.name.lower()}.{sub.name.lower()}"] = sub
    return out


USER_ATTR_INDEX: Mapping[str, Attr] = attr_index("User")
GROUP_ATTR_INDEX: Mapping[str, Attr] = attr_index("Group")
