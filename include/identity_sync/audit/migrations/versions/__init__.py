"""Audit schema revisions, oldest first by ``down_revision``."""
