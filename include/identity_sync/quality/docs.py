"""Optional GX Data Docs: one HTML page per suite per run, for people who prefer to browse.

Rendered straight from the validation result (no GX project or stores needed, so it works in the
ephemeral context the gate uses). Off unless ``IDSYNC_DATA_DOCS_DIR`` is set.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DOCS_ENV = "IDSYNC_DATA_DOCS_DIR"


def docs_dir() -> Path | None:
    value = os.environ.get(DOCS_ENV)
    return Path(value) if value else None


def safe_name(text: str) -> str:
    """A run id as a directory name (run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def write_data_docs(run_id: str, suite: str, validation: Any,
                    directory: Path | None = None) -> Path | None:
    """Write ``<dir>/<run id>/<suite>.html``; returns the path, or None when disabled. A rendering
    failure is logged, never fatal: the docs are a convenience, the audit store is the record."""
    base = directory or docs_dir()
    if base is None or validation is None:
        return None
    try:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(validation))
        path = base / safe_name(run_id) / f"{suite}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    except Exception as exc:
        log.warning("data docs for %s not written: %s", suite, exc)
        return None
    log.info("data docs for %s: %s", suite, path)
    return path
