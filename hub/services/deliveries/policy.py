"""How hard the hub tries: attempts, backoff, lease length, batch size."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from hub.config import Settings


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 20
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 900.0
    timeout_seconds: float = 10.0
    batch: int = 50
    concurrency: int = 8

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(
            max_attempts=s.delivery_max_attempts,
            backoff_seconds=s.delivery_backoff_seconds,
            backoff_max_seconds=s.delivery_backoff_max_seconds,
            timeout_seconds=s.delivery_timeout_seconds,
            batch=s.delivery_batch,
            concurrency=s.delivery_concurrency,
        )

    @property
    def lease(self) -> timedelta:
        """Long enough for a whole claimed batch to be sent or time out.

        A send takes at most about 3 x timeout (connect, write, read); a batch
        is sent ``concurrency`` at a time.
        """
        waves = -(-self.batch // self.concurrency) + 1
        return timedelta(seconds=waves * 3 * self.timeout_seconds + 30)

    def backoff(self, attempts: int) -> timedelta:
        """Exponential, capped, with jitter over the upper half so retries spread out."""
        delay = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, attempts - 1))
        return timedelta(seconds=delay / 2 + random.uniform(0, delay / 2))
