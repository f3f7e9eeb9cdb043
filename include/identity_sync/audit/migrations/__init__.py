"""Alembic environment and revisions of the audit schema, shipped inside the package so the store
can upgrade a database programmatically (no ``alembic.ini`` at runtime)."""
