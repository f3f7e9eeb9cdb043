"""Deterministic, realistically messy IDCS organisations for the emulator, tests and benchmarks.

``generate_idcs_org(seed, users, groups)`` returns a state dump in the exact format of
``IdcsState.to_dict()``: the same seed always gives the same ids, names, timestamps, memberships
and grants. The mess is deliberate, since the sync must survive it: diacritics, apostrophes,
hyphens and particles in names, case-mixed and numbered userNames, personal recovery addresses,
inactive and federated users, service accounts, an "All Staff" group too big (on large orgs) to
list with members, empty groups, and direct, group and derived (GROUP_MEMBERSHIP) app grants.
"""

from __future__ import annotations

import base64
import random
import unicodedata
from datetime import UTC, datetime
from typing import Any

from .idcs_common import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    GRANT_SCHEMA,
    GROUP_EXTENSION,
    GROUP_SCHEMA,
    USER_EXTENSION,
    USER_SCHEMA,
    USER_STATE_EXTENSION,
)

ENTERPRISE_EXTENSION = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
APP_SCHEMA = "urn:ietf:params:scim:schemas:oracle:idcs:App"

# (weight, given names, family names) per naming culture.
_CULTURES: list[tuple[int, str, str]] = [
    (
        14,
        "James Emma Oliver Grace Liam Charlotte Harry Amelia Jack Sophie Thomas Olivia Daniel Lucy",
        "Smith Taylor Jones Brown Williams Wilson Evans Thomas Roberts Walker Wright Robinson Clarke",
    ),
    (
        6,
        "Siobhán Seán Niamh Aoife Ciarán Patrick Róisín Eoin Orla Declan",
        "O'Brien O'Connor O'Neill O'Sullivan Murphy Kelly Walsh McCarthy Byrne Ní_Bhriain",
    ),
    (
        9,
        "José María Lucía Sofía Martín Andrés Raúl Inés Ángel Javier Carmen Pilar Nicolás",
        "García Núñez Martínez López Rodríguez Hernández Pérez Sánchez Gómez Díaz Muñoz Álvarez Peña",
    ),
    (
        6,
        "Zoë Jürgen Lukas Anna Katrin Matthias Jörg Sören Leonie Günther Käthe",
        "Müller Schäfer Schröder Weiß Fischer Becker Wagner Hoffmann Krüger Groß Schmidt Köhler",
    ),
    (
        5,
        "Chloé Élodie Hélène François Théo Léa Noël Amélie Benoît Céline Gaëlle",
        "Dubois Lefèvre Moreau Girard Bonnet Leclerc Rousseau Faure Gauthier Bélanger D'Amboise",
    ),
    (
        4,
        "Giulia Lorenzo Niccolò Francesca Matteo Chiara Alessandro Federica",
        "Rossi Bianchi D'Angelo Esposito Dell'Orto Ricci De_Luca Romano Colombo",
    ),
    (
        4,
        "Søren Åsa Björn Ingrid Lars Sigrún Øystein Freja Magnus Linnéa",
        "Nørgaard Andersson Johansson Lindqvist Håkansson Sørensen Ødegård Eriksen Þórsson",
    ),
    (
        4,
        "Łukasz Małgorzata Paweł Agnieszka Zdeněk Tomáš Kateřina Wojciech Zsófia Gábor Ádám",
        "Wójcik Kowalski Nowak Lewandowska Dvořák Novák Król Wiśniewski Nagy Tóth Kovács",
    ),
    (
        3,
        "Çağla Ömer Şule İbrahim Gökhan Ayşe Emre Zeynep",
        "Yılmaz Çelik Şahin Öztürk Aydın Doğan Kılıç Arslan",
    ),
    (
        13,
        "Priya Arjun Ananya Rahul Deepika Vikram Sanjay Lakshmi Aditya Kavya Rohan Meera",
        "Sharma Patel Iyer Reddy Nair Gupta Krishnan Banerjee Venkataraman Subramanian Rao Singh",
    ),
    (
        9,
        "Wei Xiaoming Li Jing Hao Mei Yan Jun Xin Lei",
        "Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou",
    ),
    (
        4,
        "Yuki Haruto Sakura Takeshi Aiko Ren Yūko Kenji",
        "Satō Suzuki Takahashi Tanaka Watanabe Itō Yamamoto Kōno",
    ),
    (3, "Minh Thảo Quang Linh Hùng Phương", "Nguyễn Trần Lê Phạm Hoàng Võ"),
    (3, "Ji-woo Min-jun Seo-yeon Ha-eun Do-yun", "Kim Lee Park Choi Jung Kang"),
    (
        4,
        "Omar Fatima Youssef Layla Karim Nour Hassan Amira",
        "Al-Sayed Haddad Mansour El-Amin Khalil Nasser Abdel-Rahman Farouk",
    ),
    (
        4,
        "Chidi Ngozi Oluwaseun Adaeze Kwame Amara Tendai Kofi",
        "Okafor Adeyemi Okonkwo Mensah Abubakar Nwosu Eze Boateng",
    ),
    (
        3,
        "João Conceição Gonçalo Luís Thiago Beatriz Leonor",
        "Gonçalves Simões Araújo Magalhães Brandão Conceição",
    ),
    (3, "Daan Sanne Joris Femke Thijs", "van_der_Berg de_Vries van_Dijk Bakker Visser de_Jong"),
]
_CULTURE_WEIGHTS = [c[0] for c in _CULTURES]
_NAMES = [(c[1].split(), [f.replace("_", " ") for f in c[2].split()]) for c in _CULTURES]

_DEPARTMENTS = [
    "Engineering",
    "Finance",
    "Marketing",
    "Sales",
    "Legal",
    "Support",
    "Security",
    "Product",
    "Design",
    "Procurement",
    "Research",
    "Operations",
    "Facilities",
    "Compliance",
    "Treasury",
    "Analytics",
    "Human Resources",
    "IT Operations",
    "Data Science",
    "Customer Success",
    "Quality Assurance",
]
_TEAMS = [
    "Platform",
    "Payments",
    "Mobile",
    "Search",
    "Identity",
    "Billing",
    "Checkout",
    "Infra",
    "Web",
    "Android",
    "iOS",
    "Growth",
    "Observability",
    "Networking",
    "Storage",
    "Compilers",
    "Firmware",
    "Reporting",
    "Onboarding",
    "Pricing",
    "Catalog",
    "Data Platform",
    "Developer Experience",
    "Site Reliability",
    "Release Engineering",
]
_REGIONS = ["EMEA", "APAC", "NA", "LATAM", "DACH", "Nordics", "UK&I", "ANZ"]
_SITES = [
    "München",
    "Montréal",
    "São Paulo",
    "Zürich",
    "Kraków",
    "Bengaluru",
    "Dublin",
    "Reykjavík",
]
_PROJECTS = [
    "atlas",
    "phoenix",
    "orion",
    "hermes",
    "apollo",
    "zephyr",
    "kraken",
    "nimbus",
    "falcon",
    "tundra",
    "aurora",
    "quasar",
    "helix",
    "pegasus",
    "titan",
    "vega",
    "comet",
    "lynx",
    "mercury",
    "borealis",
]
_CORE_GROUPS = [
    "Bitbucket Admins",
    "Bitbucket Users",
    "Engineering",
    "Platform Team",
    "Contractors",
    "Jira Users",
    "Confluence Users",
    "All Staff",
    "Interns",
    "Service Accounts",
    "R&D",
    "Sales & Marketing",
]
# Relative popularity of the core groups that users join by choice (the busiest ordinary group is 1).
_CORE_POPULARITY = {
    "Bitbucket Users": 0.6,
    "Engineering": 0.6,
    "Platform Team": 0.15,
    "Jira Users": 0.4,
    "Confluence Users": 0.3,
    "R&D": 0.05,
    "Sales & Marketing": 0.05,
}
_PER_USER_WEIGHTS = (45, 25, 15, 10, 5)  # P(user is in 1..5 groups)
_ALWAYS_GRANTED = {"Bitbucket Admins", "Bitbucket Users", "Engineering", "Platform Team"}
_NEVER_GRANTED = {"All Staff", "Jira Users", "Confluence Users"}
_FOLD = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "AE",
        "ß": "ss",
        "đ": "d",
        "Đ": "D",
        "ı": "i",
        "œ": "oe",
        "Œ": "OE",
        "þ": "th",
        "Þ": "Th",
        "ð": "d",
        "Ð": "D",
    }
)

EPOCH = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
CREATED_SPAN = datetime(2025, 12, 31, tzinfo=UTC).timestamp() - EPOCH
MODIFIED_END = datetime(2026, 6, 30, tzinfo=UTC).timestamp()


def ascii_fold(text: str) -> str:
    """``Núñez`` -> ``Nunez``, ``Łukasz`` -> ``Lukasz``: how admins derive login names."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _login_part(text: str) -> str:
    return "".join(c for c in ascii_fold(text) if c.isalnum() or c == "-")


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Gen:
    """One generation run: the rng plus the domain-wide constants every resource shares."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.ids: set[str] = set()
        self.host = f"https://idcs-{self.hex()}.identity.oraclecloud.com"
        tenancy = self.ocid("tenancy")
        self.common = {
            "domainOcid": self.ocid("domain"),
            "compartmentOcid": tenancy,
            "tenancyOcid": tenancy,
        }
        self.creator = {
            "type": "App",
            "display": "IDCSApp",
            "value": "IDCSAppId",
            "$ref": f"{self.host}/admin/v1/Apps/IDCSAppId",
        }

    def hex(self) -> str:
        while True:
            value = f"{self.rng.getrandbits(128):032x}"
            if value not in self.ids:
                self.ids.add(value)
                return value

    def ocid(self, kind: str) -> str:
        raw = base64.b32encode(self.rng.getrandbits(260).to_bytes(33, "big")).decode()
        return f"ocid1.{kind}.oc1..aaaaaaaa{raw[:52].lower()}"

    def times(self, n: int, start: float = EPOCH, span: float = CREATED_SPAN) -> list[float]:
        """Sorted creation times, so list order (creation order) matches ``meta.created``."""
        return sorted(start + self.rng.random() * span for _ in range(n))

    def meta(self, kind: str, rid: str, created: float) -> dict[str, Any]:
        modified = created
        if self.rng.random() < 0.6:
            modified = created + self.rng.random() * (MODIFIED_END - created)
        return {
            "created": _stamp(created),
            "lastModified": _stamp(modified),
            "version": f"{self.rng.getrandbits(128):032x}",
            "resourceType": kind,
            "location": f"{self.host}/admin/v1/{kind}s/{rid}",
        }


def _person(gen: _Gen) -> tuple[str, str]:
    rng = gen.rng
    given_pool, family_pool = _NAMES[rng.choices(range(len(_NAMES)), _CULTURE_WEIGHTS)[0]]
    given, family = rng.choice(given_pool), rng.choice(family_pool)
    if rng.random() < 0.03:
        other = rng.choice(family_pool)
        if other != family and " " not in family + other:
            family = f"{family}-{other}"
    return given, family


def _users(gen: _Gen, count: int) -> list[dict[str, Any]]:
    rng = gen.rng
    taken: set[str] = set()
    schemas = [USER_SCHEMA, USER_STATE_EXTENSION, USER_EXTENSION]
    unlocked = {"locked": {"on": False}}
    n_service = count // 250
    users = []
    for i, created in enumerate(gen.times(count)):
        uid = gen.hex()
        service = i % 250 == 249 and i // 250 < n_service
        if service:
            given, family = (
                "Service",
                f"{rng.choice(_TEAMS)} {rng.choice(['CI', 'Deploy', 'Backup'])}",
            )
            base = f"svc-{_login_part(family.split(maxsplit=1)[0]).lower()}-{family.rsplit(maxsplit=1)[-1].lower()}"
        else:
            given, family = _person(gen)
            base = f"{_login_part(given)}.{_login_part(family)}".lower()
            if rng.random() < 0.05:
                base = f"{_login_part(given)[:1]}{_login_part(family)}".lower()
        login, n = base, 1
        while login in taken:
            n += 1
            login = f"{base}{n}"
        taken.add(login)
        user_type = (
            "Service"
            if service
            else rng.choices(["Employee", "Contractor", "Intern"], [90, 8, 2])[0]
        )
        user_name = login
        if rng.random() < 0.03 and not service:
            user_name = ".".join(p[:1].upper() + p[1:] for p in login.split("."))
        domain = "partner.example.net" if user_type == "Contractor" else "example.com"
        work = f"{login}@{domain}"
        recovery = f"{login}@mail.example.org" if rng.random() < 0.2 else work
        formatted = f"{given} {family}"
        display = f"{family}, {given}" if rng.random() < 0.04 else formatted
        federated = not service and rng.random() < 0.10
        modified_meta = gen.meta("User", uid, created)
        ext: dict[str, Any] = {
            "isFederatedUser": federated,
            "preferredUiLandingPage": "MyApps",
            "serviceUser": service,
            "provider": "IDCS",
            "doNotShowGettingStarted": False,
            "creationMechanism": "samljit"
            if federated
            else rng.choice(["api", "import", "idcsui"]),
            "groupMembershipLastModified": modified_meta["lastModified"],
        }
        user: dict[str, Any] = {
            "idcsCreatedBy": gen.creator,
            "id": uid,
            USER_EXTENSION: ext,
            "meta": modified_meta,
            "active": rng.random() >= 0.03,
            "displayName": display,
            "name": {"givenName": given, "familyName": family, "formatted": formatted},
            USER_STATE_EXTENSION: unlocked,
            "ocid": gen.ocid("user"),
            "userName": user_name,
            "userType": user_type,
            "emails": [
                {
                    "value": work,
                    "type": "work",
                    "secondary": False,
                    "verified": rng.random() < 0.7,
                    "primary": True,
                },
                {
                    "value": recovery,
                    "type": "recovery",
                    "secondary": False,
                    "verified": False,
                    "primary": False,
                },
            ],
            "schemas": schemas,
            **gen.common,
            "idcsLastModifiedBy": gen.creator,
        }
        if user_type in {"Employee", "Intern"}:
            user[ENTERPRISE_EXTENSION] = {
                "employeeNumber": str(100000 + i),
                "department": rng.choice(_DEPARTMENTS),
            }
            user["schemas"] = [*schemas, ENTERPRISE_EXTENSION]
        users.append(user)
    return users


def _group_names(gen: _Gen, count: int) -> list[str]:
    rng = gen.rng
    names, seen = [], set()
    patterns = [
        lambda: rng.choice(_DEPARTMENTS),
        lambda: f"{rng.choice(_TEAMS)} Team",
        lambda: f"{rng.choice(_REGIONS)} {rng.choice(_DEPARTMENTS)}",
        lambda: f"{rng.choice(_DEPARTMENTS)} - {rng.choice(_TEAMS)}",
        lambda: f"proj-{rng.choice(_PROJECTS)}",
        lambda: (
            f"{rng.choice(['bitbucket', 'jira', 'confluence'])}-{rng.choice(_PROJECTS)}-"
            f"{rng.choice(['developers', 'admins', 'readers'])}"
        ),
        lambda: f"Office - {rng.choice(_SITES)}",
        lambda: f"{rng.choice(_TEAMS)} {rng.choice(['On-Call', 'Leads', 'Reviewers'])}",
        lambda: f"{rng.choice(_DEPARTMENTS)} Managers",
        lambda: f"{rng.choice(_REGIONS)} {rng.choice(_DEPARTMENTS)} - {rng.choice(_TEAMS)}",
        lambda: f"{rng.choice(_SITES)} {rng.choice(_DEPARTMENTS)}",
        lambda: f"proj-{rng.choice(_PROJECTS)}-{rng.choice(range(2019, 2027))}",
    ]
    candidates = iter(_CORE_GROUPS)
    while len(names) < count:
        name = next(candidates, None) or rng.choice(patterns)()
        key, n = name.casefold(), 1
        while key in seen:
            n += 1
            key = f"{name} {n}".casefold()
        seen.add(key)
        names.append(name if n == 1 else f"{name} {n}")
    return names


def _groups(
    gen: _Gen,
    count: int,
    users: list[dict[str, Any]],
    per_user: tuple[int, int],
    memberships: int | None = None,
) -> list[dict[str, Any]]:
    """Groups, each user in ``per_user`` (min, max) of them (fewer is likelier); group
    popularity is skewed (Zipf-like) and ~5% of ordinary groups stay empty. With a
    ``memberships`` target, per-user counts are uniform around the average it implies and drawn
    until distinct, so the total lands near the target despite the skew."""
    rng = gen.rng
    names = _group_names(gen, count)
    groups = []
    for name, created in zip(names, gen.times(count, EPOCH, CREATED_SPAN * 0.5), strict=True):
        gid = gen.hex()
        ext = {"description": f"{name} group", "creationMechanism": rng.choice(["api", "idcsui"])}
        groups.append(
            {
                "id": gid,
                "ocid": gen.ocid("group"),
                "displayName": name,
                "nonUniqueDisplayName": name,
                "meta": gen.meta("Group", gid, created),
                "schemas": [GROUP_SCHEMA, GROUP_EXTENSION],
                GROUP_EXTENSION: ext,
                **gen.common,
                "idcsCreatedBy": gen.creator,
                "idcsLastModifiedBy": gen.creator,
                "members": [],
            }
        )
    index = {g["displayName"]: i for i, g in enumerate(groups)}
    special = {index[n] for n in _CORE_GROUPS if n in index}
    ordinary = [i for i in range(count) if i not in special]
    rng.shuffle(ordinary)
    empty = set(ordinary[: len(ordinary) // 20])
    pool = [i for i in ordinary if i not in empty]
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(pool))]
    for name, popularity in _CORE_POPULARITY.items():
        if name in index:
            pool.append(index[name])
            weights.append(popularity)
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    fixed = {
        "Contractor": index.get("Contractors"),
        "Intern": index.get("Interns"),
        "Service": index.get("Service Accounts"),
        "Employee": index.get("All Staff"),
    }
    if memberships is not None and users:
        average = memberships / len(users)
        per_user = (max(1, round(average / 2)), max(1, round(average * 1.5)))
        per_user = (min(per_user[0], len(pool) + 1), min(per_user[1], len(pool) + 1))
    sizes = range(per_user[0], per_user[1] + 1)
    if memberships is not None:
        size_weights: Any = [1] * len(sizes)
    elif per_user == (1, 5):
        size_weights = _PER_USER_WEIGHTS
    else:
        size_weights = [1 / (k + 1) for k in range(len(sizes))]
    memberships: list[list[int]] = []
    for user in users:
        wanted = rng.choices(sizes, size_weights)[0]
        chosen: list[int] = []
        home = fixed.get(user["userType"])
        if home is not None and wanted:
            chosen.append(home)
        if user["userType"] != "Service" and pool:
            draws = wanted + 2
            while True:
                for gi in rng.choices(pool, cum_weights=cum, k=draws):
                    if gi not in chosen and len(chosen) < wanted:
                        chosen.append(gi)
                # Without a target, duplicates simply make fewer groups (the historical output).
                if memberships is None or len(chosen) >= min(wanted, len(pool)) or draws > 64 * (
                    wanted + 2
                ):
                    break
                draws *= 2
        memberships.append(chosen)
    admins = index.get("Bitbucket Admins")
    if admins is not None:
        # A handful of admins (about sqrt(users)/3), picked among people with a free slot.
        eligible = [
            i
            for i, u in enumerate(users)
            if u["userType"] == "Employee" and len(memberships[i]) < per_user[1]
        ]
        for i in sorted(
            rng.sample(eligible, min(len(eligible), max(2, round(len(users) ** 0.5 / 3))))
        ):
            memberships[i].append(admins)
    for user, chosen in zip(users, memberships, strict=True):
        member = {
            "value": user["id"],
            "type": "User",
            "display": user["displayName"],
            "name": user["userName"],
        }
        for gi in chosen:
            groups[gi]["members"].append(member)
    return groups


def _apps(gen: _Gen, app_id: str) -> list[dict[str, Any]]:
    def app(aid: str, display: str, name: str, oauth: bool, created: float) -> dict[str, Any]:
        made = {
            "id": aid,
            "ocid": gen.ocid("domainapp"),
            "schemas": [APP_SCHEMA],
            "displayName": display,
            "name": name,
            "active": True,
            "description": "Client credentials for the identity sync pipeline"
            if oauth
            else f"{display} (Atlassian Data Center)",
            "isOAuthClient": oauth,
            "isManagedApp": False,
            "isUnmanagedApp": not oauth,
            "isOPCService": False,
            "isAliasApp": False,
            "showInMyApps": not oauth,
            "allowAccessControl": not oauth,
            "meta": gen.meta("App", aid, created),
            **gen.common,
            "idcsCreatedBy": gen.creator,
        }
        if oauth:
            made["clientType"] = "confidential"
        return made

    return [
        app(app_id, "Bitbucket", "bitbucket-dc", False, EPOCH + 3600),
        app(gen.hex(), "Jira Software", "jira-dc", False, EPOCH + 7200),
        app(gen.hex(), "Confluence", "confluence-dc", False, EPOCH + 9000),
        app(gen.hex(), "Identity Sync", DEMO_CLIENT_ID, True, EPOCH + 10800),
    ]


def _grants(
    gen: _Gen, apps: list[dict[str, Any]], groups: list[dict[str, Any]], users: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Bitbucket to ~60% of groups and a few users; Jira and Confluence to a few groups."""
    rng = gen.rng
    bitbucket, jira, confluence = apps[0], apps[1], apps[2]
    plan: list[tuple[dict[str, Any], dict[str, Any], str]] = []
    for group in groups:
        name = group["displayName"]
        if name in _ALWAYS_GRANTED or (name not in _NEVER_GRANTED and rng.random() < 0.6):
            plan.append((bitbucket, group, "Group"))
        if name == "Jira Users" or (name not in _NEVER_GRANTED and rng.random() < 0.1):
            plan.append((jira, group, "Group"))
        if name == "Confluence Users":
            plan.append((confluence, group, "Group"))
    if users:
        direct = rng.sample(range(len(users)), min(len(users), max(2, len(users) // 200)))
        plan.extend((bitbucket, users[i], "User") for i in sorted(direct))
        plan.extend(
            (jira, users[i], "User") for i in rng.sample(range(len(users)), min(2, len(users)))
        )
    grants = []
    for app, grantee, kind in plan:
        gid = gen.hex()
        created = max(_epoch(grantee["meta"]["created"]), _epoch(app["meta"]["created"]))
        created += rng.random() * 86400 * 30
        meta = gen.meta("Grant", gid, created)
        meta["lastModified"] = meta["created"]
        grants.append(
            {
                "id": gid,
                "ocid": gen.ocid("grant"),
                "schemas": [GRANT_SCHEMA],
                "grantee": {
                    "value": grantee["id"],
                    "type": kind,
                    "display": grantee["displayName"],
                },
                "app": {"value": app["id"], "display": app["displayName"]},
                "grantMechanism": f"ADMINISTRATOR_TO_{kind.upper()}",
                "isFulfilled": True,
                "meta": meta,
                **gen.common,
                "idcsCreatedBy": gen.creator,
            }
        )
    grants.sort(key=lambda g: g["meta"]["created"])
    return grants


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def generate_idcs_org(
    seed: int,
    users: int,
    groups: int,
    *,
    app_id: str = DEMO_APP_ID,
    groups_per_user: tuple[int, int] = (1, 5),
    memberships: int | None = None,
) -> dict[str, Any]:
    """A complete IDCS state dump (``IdcsState.to_dict()`` format) for ``seed``.

    Each user is in ``groups_per_user`` groups (default 1-5, mostly 1-2, about 2 on average);
    raise it, e.g. ``(5, 15)``, for membership-heavy benchmarks, or give ``memberships``, a
    target total (within a few percent; it overrides ``groups_per_user``), as the benchmark
    scenarios do (10,000 users with 200,000 memberships).

    Resources share constant sub-objects (``schemas``, ``idcsCreatedBy``...) to keep 100,000-user
    orgs small in memory; treat the result as read-only or copy it before editing.
    """
    if users < 0 or groups < 0 or not 0 <= groups_per_user[0] <= groups_per_user[1]:
        raise ValueError("users and groups must be >= 0 and groups_per_user a (min, max) range")
    gen = _Gen(seed)
    gen.ids.add(app_id)
    user_list = _users(gen, users)
    if memberships is not None and memberships < 0:
        raise ValueError("memberships must be >= 0")
    group_list = _groups(gen, groups, user_list, groups_per_user, memberships)
    apps = _apps(gen, app_id)
    return {
        "users": user_list,
        "groups": group_list,
        "apps": apps,
        "grants": _grants(gen, apps, group_list, user_list),
        "clients": [{"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}],
    }
