"""One emulator in its own process, for the benchmark: ``python -m bench.emulator_server``.

Why a separate process: the emulators' CPU (JSON encoding, filtering 100,000 users) must not be
counted in the pipeline's CPU and RSS, nor hold the pipeline's GIL. The server binds port 0 and
prints one JSON line (``{"port": ...}``) when it is ready. Besides the emulator's own controls
it offers three bench-only routes under ``/_emulator/bench/`` (not counted as API calls):

- ``GET summary`` (both) and ``POST mark`` (Bitbucket): sizes, and what changed since the mark,
  from which the harness computes minimum request counts;
- ``POST changes`` (IDCS): the incremental scenario's change set, applied in place and dated;
- ``POST user`` (IDCS): one new, granted user, for the on-login run.

If the IDCS emulator has no fault injector yet, the same :mod:`faults` middleware is installed
here, so ``PUT /_emulator/faults`` with a latency works on both servers.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from identity_sync.emulators.common import CONTROL_PREFIX, RunningServer
from identity_sync.emulators.faults import FaultInjector, fault_routes, install_faults

from .changes import (
    ChangeSpec,
    add_login_user,
    apply_changes,
    bitbucket_summary,
    compact_bitbucket,
    idcs_summary,
)

BENCH = f"{CONTROL_PREFIX}/bench"


def _has_route(app: Starlette, path: str) -> bool:
    return any(getattr(r, "path", None) == path for r in app.router.routes)


def ensure_faults(app: Starlette) -> None:
    """Install latency/fault injection on an emulator that lacks it (IDCS before H1's work)."""
    if _has_route(app, f"{CONTROL_PREFIX}/faults"):
        return
    injector = FaultInjector()
    app.router.routes.extend(fault_routes(injector))
    install_faults(app, injector)
    app.state.faults = injector


def idcs_bench_routes(app: Starlette) -> list[Route]:
    state = app.state.emulator

    async def summary(request: Request) -> Response:
        return JSONResponse(idcs_summary(state, request.query_params.get("app_id")))

    async def changes(request: Request) -> Response:
        body = await request.json()
        spec = ChangeSpec.of_total(body["app_id"], int(body.get("total", 100)),
                                   int(body.get("seed", 7)))
        return JSONResponse(apply_changes(state, spec))

    async def user(request: Request) -> Response:
        body = await request.json()
        return JSONResponse(add_login_user(state, int(body.get("seed", 0)), body["app_id"]))

    return [Route(f"{BENCH}/summary", summary, methods=["GET"]),
            Route(f"{BENCH}/changes", changes, methods=["POST"]),
            Route(f"{BENCH}/user", user, methods=["POST"])]


def bitbucket_bench_routes(app: Starlette) -> list[Route]:
    state = app.state.emulator
    marks: dict[str, Any] = {}

    async def mark(_: Request) -> Response:
        marks["before"] = compact_bitbucket(state)
        return Response(status_code=204)

    async def summary(_: Request) -> Response:
        return JSONResponse(bitbucket_summary(state, marks.get("before")))

    return [Route(f"{BENCH}/mark", mark, methods=["POST"]),
            Route(f"{BENCH}/summary", summary, methods=["GET"])]


def build_app(kind: str, users: int, groups: int, memberships: int, seed: int) -> Starlette:
    if kind == "idcs":
        from identity_sync.emulators.idcs import create_idcs_app
        from identity_sync.emulators.orggen import generate_idcs_org

        app = create_idcs_app()
        app.state.emulator.load_dict(
            generate_idcs_org(seed, users, groups, memberships=memberships))
        routes = idcs_bench_routes(app)
    else:
        from identity_sync.emulators.bitbucket import create_bitbucket_app

        app = create_bitbucket_app()
        routes = bitbucket_bench_routes(app)
    # Before the catch-all routes (none today), so bench routes always match.
    app.router.routes[:0] = routes
    ensure_faults(app)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["idcs", "bitbucket"])
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--groups", type=int, default=0)
    parser.add_argument("--memberships", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    app = build_app(args.kind, args.users, args.groups, args.memberships, args.seed)
    server = RunningServer(app, "127.0.0.1", 0).start(timeout=60)
    print(json.dumps({"port": server.port}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # The harness closes our stdin when it is done; that ends us too (no orphans).
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
