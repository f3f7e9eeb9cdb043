"""Write ``.env`` for docker-compose from ``.env.example``, with fresh secrets and your uid.

    python3 deploy/new_env.py            # writes .env (refuses to overwrite one)
    python3 deploy/new_env.py --stdout   # prints it instead

Generated: the Fernet key, the JWT secret, the admin, PostgreSQL and audit database passwords
(URL-safe, as they go into database URLs) and ``AIRFLOW_UID``. Everything else is copied as it is;
edit ``.env`` afterwards (the IDCS_* and BITBUCKET_* connection values in particular).
Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

GENERATED: dict[str, Callable[[], str]] = {
    # A Fernet key is 32 random bytes, URL-safe base64 encoded.
    "AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    # At least 64 bytes: Airflow warns below that for its HMAC-SHA512 tokens.
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(64),
    "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(18),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "AUDIT_DB_PASSWORD": lambda: secrets.token_urlsafe(24),
    "AIRFLOW_UID": lambda: str(os.getuid()),
}


def render(example: str, generated: dict[str, Callable[[], str]] = GENERATED) -> str:
    """``.env.example`` with the generated values filled in, comments and order kept."""
    lines = []
    for line in example.splitlines():
        name, sep, _ = line.partition("=")
        if sep and not line.lstrip().startswith("#") and name.strip() in generated:
            lines.append(f"{name}={generated[name.strip()]()}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=PROJECT / ".env.example")
    parser.add_argument("--output", type=Path, default=PROJECT / ".env")
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args(argv)
    text = render(args.example.read_text())
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.output.exists():
        print(f"{args.output} exists; not overwriting it (its secrets encrypt your data)",
              file=sys.stderr)
        return 1
    args.output.write_text(text)
    args.output.chmod(0o600)
    print(f"wrote {args.output}: admin password is AIRFLOW_ADMIN_PASSWORD in it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
