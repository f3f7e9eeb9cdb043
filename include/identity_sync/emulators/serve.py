"""Run both emulators: ``make emulators`` (foreground) or :func:`start_emulators` (in-process).

State lives in ``--state-dir`` between runs; an empty IDCS is seeded with a generated
organisation so there is something to sync.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from .bitbucket import DEMO_ADMIN_PASSWORD, DEMO_ADMIN_USER, create_bitbucket_app
from .common import RunningServer
from .idcs import create_idcs_app
from .idcs_common import DEMO_APP_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from .orggen import generate_idcs_org

DEFAULT_STATE_DIR = Path(".demo") / "emulators"


@dataclass
class Emulators:
    idcs: RunningServer
    bitbucket: RunningServer
    seeded: bool

    def stop(self) -> None:
        """Stop both; each saves its state on shutdown."""
        self.idcs.stop()
        self.bitbucket.stop()

    def connections(self) -> dict[str, dict[str, object]]:
        """Airflow connections (JSON form) pointing at these emulators."""
        return demo_connections(self.idcs.base_url, self.bitbucket.base_url)


def demo_connections(idcs_url: str, bitbucket_url: str) -> dict[str, dict[str, object]]:
    """Airflow connections (JSON form) for emulators at these URLs, with the demo credentials."""
    return {
        "idcs_default": {"conn_type": "idcs", "host": idcs_url, "login": DEMO_CLIENT_ID,
                         "password": DEMO_CLIENT_SECRET, "extra": {"app_id": DEMO_APP_ID}},
        "bitbucket_default": {"conn_type": "bitbucket", "host": bitbucket_url,
                              "login": DEMO_ADMIN_USER, "password": DEMO_ADMIN_PASSWORD},
    }


def start_emulators(state_dir: Path | None, *, host: str = "127.0.0.1", idcs_port: int = 0,
                    bitbucket_port: int = 0, users: int = 300, groups: int = 30,
                    seed: int = 42) -> Emulators:
    """Start both on real sockets (port 0 picks a free one); seed IDCS if it has no users."""
    idcs_app = create_idcs_app(state_file=state_dir / "idcs.json" if state_dir else None)
    bb_app = create_bitbucket_app(state_file=state_dir / "bitbucket.json" if state_dir else None)
    idcs = RunningServer(idcs_app, host, idcs_port).start()
    bitbucket = RunningServer(bb_app, host, bitbucket_port).start()
    state = idcs_app.state.emulator
    seeded = not state.to_dict().get("users")
    if seeded:
        state.load_dict(generate_idcs_org(seed, users, groups))
    return Emulators(idcs, bitbucket, seeded)


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Run the IDCS and Bitbucket DC emulators.")
    parser.add_argument("--host", default=env("EMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--idcs-port", type=int, default=int(env("IDCS_EMULATOR_PORT", "8701")))
    parser.add_argument("--bitbucket-port", type=int,
                        default=int(env("BITBUCKET_EMULATOR_PORT", "8702")))
    parser.add_argument("--state-dir", type=Path,
                        default=Path(env("EMULATOR_STATE_DIR", str(DEFAULT_STATE_DIR))))
    parser.add_argument("--users", type=int, default=int(env("DEMO_USERS", "300")))
    parser.add_argument("--groups", type=int, default=int(env("DEMO_GROUPS", "30")))
    parser.add_argument("--seed", type=int, default=int(env("DEMO_SEED", "42")))
    args = parser.parse_args(argv)

    emulators = start_emulators(args.state_dir, host=args.host, idcs_port=args.idcs_port,
                                bitbucket_port=args.bitbucket_port, users=args.users,
                                groups=args.groups, seed=args.seed)
    i, b = emulators.idcs.base_url, emulators.bitbucket.base_url
    print(f"""IDCS emulator       {i}
  client credentials  {DEMO_CLIENT_ID} / {DEMO_CLIENT_SECRET}   (IDCS App id {DEMO_APP_ID})
  try:  TOKEN=$(curl -s -u {DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET} -d grant_type=client_credentials \\
          -d scope=urn:opc:idm:__myscopes__ {i}/oauth2/v1/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
        curl -s -H "Authorization: Bearer $TOKEN" '{i}/admin/v1/Users?count=2&attributes=userName,emails'
Bitbucket emulator  {b}
  service account     {DEMO_ADMIN_USER} / {DEMO_ADMIN_PASSWORD}
  try:  curl -s -u {DEMO_ADMIN_USER}:{DEMO_ADMIN_PASSWORD} '{b}/rest/api/1.0/admin/users?limit=5'
Test controls under /_emulator/ (state, seed, reset, calls, faults, responses; IDCS also rate-limits, tokens/revoke, corruptions). State kept in {args.state_dir}
{"Seeded IDCS with a generated organisation. " if emulators.seeded else ""}Ctrl-C to stop.""",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    emulators.stop()
    print("emulators stopped, state saved")


if __name__ == "__main__":
    main()
