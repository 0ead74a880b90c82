"""How a vendor adapter says, in its source's ``status``, whether its work is failing now.

Every vendor adapter records the same keys, so the console (which marks
``last_error`` as a fault) reads alike for each:

- ``last_error``: the fault of the adapter's latest work; cleared (null) by the
  next work that succeeds, so a red line means "failing now".
- ``last_error_at``: when the last fault happened, kept after recovery.
- ``previous_error``: the fault a later success cleared, so "failed once,
  recovered" still says what went wrong (null again while failing).
- ``last_ok_at``: when work last succeeded.

Each function returns the values to pass to ``sources.set_state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# An error is a line in the console, not a log.
MAX_ERROR = 500


def failed(error: str, at: str) -> dict[str, Any]:
    """The work done at ``at`` failed with ``error``."""
    return {"last_error": error[:MAX_ERROR], "last_error_at": at, "previous_error": None}


def succeeded(state: Mapping[str, Any], at: str) -> dict[str, Any]:
    """The work done at ``at`` succeeded; ``state`` is the source's status before it."""
    return {
        "last_ok_at": at,
        "last_error": None,
        "previous_error": state.get("last_error") or state.get("previous_error"),
    }
