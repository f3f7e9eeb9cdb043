"""Audit store: migrations, idempotent and concurrent writes, admin queries, CLI, retention."""
