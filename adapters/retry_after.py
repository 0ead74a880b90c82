"""How long an HTTP answer asks to be left alone (``Retry-After``, RFC 9110 10.2.3).

Vendor APIs answer 429 or 503 with it, as a number of seconds or an HTTP
date; the adapters hand the figure to the delivery worker
(``DeliveryError(retry_after=...)``), each with its own default and bounds.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


def seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, never negative; None when the value is absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        try:
            wait = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError):
            return None
    return max(wait, 0.0)
