"""One-off measurement (not a test): requests of a full extract of 10,000 users, 1,000 groups
and about 200,000 memberships against the IDCS emulator, next to the minimum the API allows.

Run: ``.venv/bin/python tests/idcs/measure_extract.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include"))

from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_idcs_app,
)
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.idcs.client import MAX_PAGE, IdcsClient
from identity_sync.idcs.extract import extract_full


def main() -> None:
    state = generate_idcs_org(42, 10_000, 1_000, groups_per_user=(18, 26))
    memberships = sum(len(g["members"]) for g in state["groups"])
    direct = [g for g in state["grants"] if g["app"]["value"] == DEMO_APP_ID]
    app = create_idcs_app()
    app.state.emulator.load_dict(state)
    print(f"tenant: {len(state['users'])} users, {len(state['groups'])} groups (+ All Tenant "
          f"Users), {memberships} memberships, {len(direct)} direct grants of the App")
    users_pages = math.ceil(len(state["users"]) / MAX_PAGE)
    group_pages = math.ceil((len(state["groups"]) + 1) / MAX_PAGE)
    print(f"minimum (mode all): 1 token + {users_pages} user pages (groups inline) + "
          f"{math.ceil(len(state['groups']) / MAX_PAGE)} group page(s) = "
          f"{1 + users_pages + math.ceil(len(state['groups']) / MAX_PAGE)} "
          f"(the built-in All Tenant Users group makes it {group_pages} group pages)")
    with serving(app) as server:
        for mode, strategy in (("all", "user_side"), ("app_grants", "user_side"),
                               ("all", "group_side")):
            client = IdcsClient(server.base_url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
            began = time.monotonic()
            result = extract_full(client, mode=mode, app_id=DEMO_APP_ID,
                                  membership=strategy)  # type: ignore[arg-type]
            seconds = time.monotonic() - began
            snap = client.metrics.snapshot()
            got = sum(len(u.group_ids) for u in result.snapshot.users)
            per = ", ".join(f"{k} {v['requests']}" for k, v in snap["endpoints"].items())
            print(f"mode {mode:10} memberships {strategy:10}: {snap['requests']:5} requests, "
                  f"{snap['bytes'] / 2**20:6.1f} MiB, {seconds:5.1f}s, "
                  f"{len(result.snapshot.users)} users in scope, {got} memberships  [{per}]")


if __name__ == "__main__":
    main()
