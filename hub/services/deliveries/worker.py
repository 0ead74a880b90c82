"""The background thread of each ``vethub serve`` that dispatches, sends and settles."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hub.config import Settings
from hub.db import Database
from hub.models.deliveries import DeliveryStatus as ST
from hub.services.deliveries.dispatch import dispatch
from hub.services.deliveries.kinds import (
    Claim,
    DeliveryError,
    Registry,
    Sender,
    SendOptions,
    Target,
)
from hub.services.deliveries.leases import Outcome, claim, has_work, settle_many
from hub.services.deliveries.policy import Policy
from hub.tls import client_context

log = logging.getLogger("hub.deliveries")


@dataclass
class DeliveryWorker:
    """Dispatches and sends deliveries of every kind in ``kinds``.

    ``run_once`` does one round (dispatch everything due, then send leased
    batches until nothing is due) and returns how many deliveries it settled;
    ``start``/``stop`` run it every ``poll_seconds`` (and at once again when a
    round found work). Sends of one batch run in parallel: a batch never holds
    two deliveries of the same order and destination.
    """

    db: Database
    settings: Settings
    kinds: Registry
    policy: Policy = field(init=False)
    senders: dict[str, Sender] = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)
    _pool: ThreadPoolExecutor = field(init=False)
    _to_node: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.policy = Policy.from_settings(self.settings)
        options = SendOptions(
            timeout=self.settings.delivery_timeout_seconds,
            tls=client_context(self.settings),
            db=self.db,
            settings=self.settings,
        )
        self.senders = {kind.name: kind.sender(options) for kind in self.kinds}
        self._to_node = {kind.name for kind in self.kinds if kind.to_node}
        self._pool = ThreadPoolExecutor(
            self.settings.delivery_concurrency, thread_name_prefix="delivery-send"
        )

    def run_once(self, max_rounds: int = 20) -> int:
        settled = 0
        for _ in range(max_rounds):
            if self._stop.is_set():
                break
            with self.db.read_session() as s:
                if not has_work(s):
                    break
            while True:
                with self.db.session() as s:
                    if dispatch(s, self.settings.public_url, self.kinds, limit=500) == 0:
                        break
            with self.db.session() as s:
                batch = claim(s, self.policy)
            if not batch:
                break
            answers = list(self._pool.map(self._attempt, batch))
            outcomes: list[Outcome] = [
                (c, *answer) for c, answer in zip(batch, answers, strict=True)
            ]
            with self.db.session() as s:
                statuses = settle_many(s, outcomes, self.policy)
            for (c, error, _, _), status in zip(outcomes, statuses, strict=True):
                if status != ST.DELIVERED:
                    log.warning(
                        "delivery attempt failed",
                        extra={
                            "delivery": c.uuid,
                            "kind": c.kind,
                            "attempt": c.attempts,
                            "status": status,
                            "error": error,
                        },
                    )
            settled += len(batch)
        return settled

    def _attempt(self, c: Claim) -> tuple[str | None, bool, float | None]:
        """Send one; ``(error or None, final, retry_after)``. Never raises."""
        if self._stop.is_set():
            return "not sent: the hub was shutting down", False, None
        target = c.target
        if c.kind in self._to_node:
            target = Target.node(str(c.payload.get("destination")))
        if target is None:
            return f"source {c.payload.get('source')!r} is no longer registered", True, None
        sender = self.senders.get(c.kind)
        if sender is None:
            return f"no sender for delivery kind {c.kind!r}", True, None
        try:
            sender(target, c)
        except DeliveryError as exc:
            return str(exc) or exc.__class__.__name__, False, exc.retry_after
        except Exception as exc:  # a bug or an unexpected library error: retry, visibly
            log.exception("delivery sender crashed", extra={"delivery": c.uuid})
            return f"internal error: {exc!r}", False, None
        return None, False, None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("delivery round failed; retrying")
                busy = 0
            if not busy:
                self._stop.wait(self.settings.delivery_poll_seconds)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="deliveries", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the round in flight (sends are bounded by their timeouts), then return."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else 3 * self.policy.timeout_seconds)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
